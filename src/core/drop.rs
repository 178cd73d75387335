//! Why a datagram or frame was dropped, and per-reason counters.
//!
//! Bad input is never an error that stops a component: it is a drop with a
//! reason, counted here and shown to the operator.

use std::fmt;

/// The reason a datagram or frame was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Too short for its headers, or a field out of range.
    Malformed,
    /// Wire header carries a protocol version we don't speak.
    BadVersion,
    /// Wire header carries an unknown message kind.
    UnknownKind,
    /// Network id is not one of ours.
    WrongNetwork,
    /// Authentication tag did not verify: wrong key, or tampered bytes.
    Forged,
    /// Counter already seen, or older than the replay window.
    Replayed,
    /// A peer sent traffic before registering (the relay asks it to register).
    NotRegistered,
    /// A datagram from an address that is not our relay.
    UnknownSender,
    /// A frame or fragment larger than the protocol or the device allows.
    TooBig,
    /// A fragmented frame whose fragments did not all arrive in time.
    ReassemblyTimeout,
    /// Reassembly state was full; the oldest pending frame was dropped.
    ReassemblyOverflow,
    /// The peer already owns the maximum number of MACs.
    MacCap,
    /// A frame whose source MAC is not a unicast address.
    BadSourceMac,
    /// Unicast to a destination nobody else in the network owns (or its sender).
    NoDestination,
    /// Sending failed (socket buffer full or the device refused it).
    SendFailed,
    /// Bridge rule 2: unicast to a MAC other than the NIC's (`PACKET_OTHERHOST`).
    NotForUs,
    /// The host's own outgoing frame (`PACKET_OUTGOING`).
    Outgoing,
    /// Bridge rule 3: an EtherType the bridge does not carry.
    EtherType,
    /// Bridge rule 4: the frame is for one of the bridge host's own addresses.
    OwnAddress,
    /// Bridge rule 5: no virtual host is known for the destination IP.
    UnknownIp,
    /// From the overlay, an IP owned by the bridge host or live on the LAN.
    Spoofed,
    /// From the overlay, unicast to a MAC never seen on the LAN.
    UnknownUnicast,
    /// From the overlay, a frame for the bridge host itself, which an
    /// AF_PACKET socket cannot deliver into the host's own stack (host
    /// access off: `--no-host-access`, or its TAP could not be made).
    ForHost,
    /// From the overlay, a frame whose source MAC was seen on the LAN (a loop).
    Loop,
    /// The relay already serves the maximum number of peers in that network.
    PeerCap,
    /// An IEEE 802.1D reserved link-local group address (`01:80:c2:00:00:0x`:
    /// STP, LACP, 802.1X, LLDP), which bridges never forward.
    LinkLocal,
    /// A LAN frame of a VLAN: the bridge carries the untagged LAN only.
    Vlan,
    /// A RoutedFrame (kind 8) for a peer that did not advertise it can take
    /// one (an older version); its sender switches to Frame (kind 6) when
    /// the relay tells it (at once, or at its next keepalive).
    NoOffload,
    /// From the overlay, an IPv6 router advertisement or redirect (RA guard,
    /// RFC 6105); `--allow-router-advertisements` forwards them.
    RaGuard,
    /// From the overlay, a DHCPv4 or DHCPv6 server message (DHCP snooping);
    /// `--allow-dhcp-servers` forwards them.
    DhcpSnooping,
    /// From the overlay, a neighbour advertisement (or redirect) whose target
    /// is an address of the bridge host or of a live LAN host, or is not a
    /// unicast address (ND inspection); `--no-nd-inspection` turns it off.
    NdInspection,
    /// From the LAN, a frame whose source MAC belongs to a virtual host (the
    /// mirror guard): no LAN host can take over a virtual host's MAC.
    MirrorGuard,
    /// From the overlay, a claim of an address the bridge is still probing
    /// the LAN for (RFC 5227 style); or, from the LAN, the answer to such a
    /// probe.
    Probing,
    /// A version 2 handshake message that did not authenticate (another
    /// network, a relay key used as a network key), replayed its
    /// timestamp, or came too often.
    HandshakeFailed,
    /// A frame whose source MAC belongs to another member (first seen owns
    /// it until it ages out).
    MacTaken,
    /// A handshake from a member key the relay was told to refuse.
    RefusedMember,
    /// A datagram for a session nobody here has (ended, or never made).
    NoSession,
    /// A handshake without a valid cookie while the relay is under load; it
    /// was answered with a cookie.
    CookieRequired,
    /// Frames waiting for a member session were over their bound.
    QueueFull,
    /// A direct-path message while direct paths are off (`--no-direct`).
    DirectOff,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 40] = [
        DropReason::Malformed,
        DropReason::BadVersion,
        DropReason::UnknownKind,
        DropReason::WrongNetwork,
        DropReason::Forged,
        DropReason::Replayed,
        DropReason::NotRegistered,
        DropReason::UnknownSender,
        DropReason::TooBig,
        DropReason::ReassemblyTimeout,
        DropReason::ReassemblyOverflow,
        DropReason::MacCap,
        DropReason::BadSourceMac,
        DropReason::NoDestination,
        DropReason::SendFailed,
        DropReason::NotForUs,
        DropReason::Outgoing,
        DropReason::EtherType,
        DropReason::OwnAddress,
        DropReason::UnknownIp,
        DropReason::Spoofed,
        DropReason::UnknownUnicast,
        DropReason::ForHost,
        DropReason::Loop,
        DropReason::PeerCap,
        DropReason::LinkLocal,
        DropReason::Vlan,
        DropReason::NoOffload,
        DropReason::RaGuard,
        DropReason::DhcpSnooping,
        DropReason::NdInspection,
        DropReason::MirrorGuard,
        DropReason::Probing,
        DropReason::HandshakeFailed,
        DropReason::MacTaken,
        DropReason::RefusedMember,
        DropReason::NoSession,
        DropReason::CookieRequired,
        DropReason::QueueFull,
        DropReason::DirectOff,
    ];

    /// A stable snake_case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadVersion => "bad_version",
            DropReason::UnknownKind => "unknown_kind",
            DropReason::WrongNetwork => "wrong_network",
            DropReason::Forged => "forged",
            DropReason::Replayed => "replayed",
            DropReason::NotRegistered => "not_registered",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::TooBig => "too_big",
            DropReason::ReassemblyTimeout => "reassembly_timeout",
            DropReason::ReassemblyOverflow => "reassembly_overflow",
            DropReason::MacCap => "mac_cap",
            DropReason::BadSourceMac => "bad_source_mac",
            DropReason::NoDestination => "no_destination",
            DropReason::SendFailed => "send_failed",
            DropReason::NotForUs => "not_for_us",
            DropReason::Outgoing => "outgoing",
            DropReason::EtherType => "ether_type",
            DropReason::OwnAddress => "own_address",
            DropReason::UnknownIp => "unknown_ip",
            DropReason::Spoofed => "spoofed",
            DropReason::UnknownUnicast => "unknown_unicast",
            DropReason::ForHost => "for_host",
            DropReason::Loop => "loop",
            DropReason::PeerCap => "peer_cap",
            DropReason::LinkLocal => "link_local",
            DropReason::Vlan => "vlan",
            DropReason::NoOffload => "no_offload",
            DropReason::RaGuard => "ra_guard",
            DropReason::DhcpSnooping => "dhcp_snooping",
            DropReason::NdInspection => "nd_inspection",
            DropReason::MirrorGuard => "mirror_guard",
            DropReason::Probing => "probing",
            DropReason::HandshakeFailed => "handshake_failed",
            DropReason::MacTaken => "mac_taken",
            DropReason::RefusedMember => "refused_member",
            DropReason::NoSession => "no_session",
            DropReason::CookieRequired => "cookie_required",
            DropReason::QueueFull => "queue_full",
            DropReason::DirectOff => "direct_off",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One counter per [`DropReason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

// By hand: `Default` is derived for arrays of at most 32 elements.
impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::ALL.len()])
    }
}

impl DropCounters {
    /// Counts one drop.
    pub fn add(&mut self, reason: DropReason) {
        self.add_n(reason, 1);
    }

    /// Counts `n` drops for one reason.
    pub fn add_n(&mut self, reason: DropReason, n: u64) {
        self.0[reason as usize] += n;
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Total drops over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The reasons with a non-zero count, with their counts.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
    }
}
