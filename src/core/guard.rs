//! First-hop security: what the bridge looks for in an IP packet from the
//! overlay before it may reach the LAN, as a managed switch inspects what
//! arrives on an untrusted access port. Pure classification; the rules that
//! act on it, and their flags, are in [`crate::core::nat`].
//!
//! [`inspect_ipv4`] and [`inspect_ipv6`] read an IP packet already checked
//! by its view's `new_checked` and say what the guards need ([`FirstHop`]):
//! * a router advertisement or a redirect (for RA guard, RFC 6105);
//! * a DHCP server message (for DHCP snooping): DHCPv4 is UDP from port 67
//!   to port 68 (a server answering a client), or from port 67 with op
//!   BOOTREPLY (a server answering a relay agent); DHCPv6 is UDP from port
//!   547 to port 546, or from port 547 with a type only servers and relay
//!   agents send (ADVERTISE, REPLY, RECONFIGURE, RELAY-REPL);
//! * a neighbour solicitation or advertisement with its target, or a router
//!   solicitation (for ND inspection; the source of any NDP message is a
//!   claim of an on-link address).
//!
//! # Evasion
//! Extension headers (hop-by-hop, routing, destination options, fragment,
//! authentication) are walked to the upper layer, so they can't hide a
//! router advertisement (RFC 7113). What can't be inspected is
//! [`DropReason::Malformed`]: a header chain that runs past the packet; a
//! first fragment that doesn't hold the whole upper-layer header (RFC 7112;
//! for IPv4, a first fragment too short for the UDP header, RFC 1858); an
//! NDP message in a packet with a fragment header, which receivers must
//! ignore anyway (RFC 6980) and whose options could not be rewritten; an
//! NDP message whose options don't parse. Later fragments have no
//! upper-layer header: they pass as [`FirstHop::Other`], and never
//! reassemble without their first fragment.

use std::net::Ipv6Addr;

use crate::core::{
    drop::DropReason,
    frame::{
        dhcp::{self, v6},
        icmpv6::{msg, Icmpv6Packet},
        ipv4::{protocol, Ipv4Packet},
        ipv6::Ipv6Packet,
        udp,
    },
};

/// What the first-hop guards see in an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstHop {
    /// An ICMPv6 router advertisement (type 134).
    RouterAdvert,
    /// An ICMPv6 redirect (type 137): `target` is the better first hop.
    Redirect {
        /// The redirect's target address.
        target: Ipv6Addr,
    },
    /// A neighbour solicitation (type 135): `target` is being resolved.
    NeighborSolicit {
        /// The address the sender wants to resolve.
        target: Ipv6Addr,
    },
    /// A neighbour advertisement (type 136): its sender claims `target`.
    NeighborAdvert {
        /// The address the sender says is at its link-layer address.
        target: Ipv6Addr,
    },
    /// A router solicitation (type 133).
    RouterSolicit,
    /// A DHCPv4 or DHCPv6 server message.
    DhcpServer,
    /// Nothing the guards look at.
    Other,
}

impl FirstHop {
    /// True for a neighbour-discovery message (RFC 4861 types 133 to 137).
    pub fn is_ndp(self) -> bool {
        matches!(
            self,
            FirstHop::RouterAdvert
                | FirstHop::Redirect { .. }
                | FirstHop::NeighborSolicit { .. }
                | FirstHop::NeighborAdvert { .. }
                | FirstHop::RouterSolicit
        )
    }
}

/// Inspects an IPv4 packet (checked with [`Ipv4Packet::new_checked`]).
pub fn inspect_ipv4(ip: &[u8]) -> Result<FirstHop, DropReason> {
    let ip = Ipv4Packet::new_unchecked(ip);
    if ip.protocol() != protocol::UDP || ip.frag_offset() != 0 {
        return Ok(FirstHop::Other);
    }
    let udp = ip.payload();
    let Some(ports) = udp.get(..udp::field::HEADER_LEN) else {
        // A first fragment too short for the UDP header hides the ports.
        return if ip.more_frags() {
            Err(DropReason::Malformed)
        } else {
            Ok(FirstHop::Other)
        };
    };
    let src = u16::from_be_bytes([ports[0], ports[1]]);
    let dst = u16::from_be_bytes([ports[2], ports[3]]);
    let op = udp.get(udp::field::HEADER_LEN + dhcp::field::OP).copied();
    // Clients take anything sent to port 68 (udhcpc and dhclient filter on
    // the destination port only), so that is a server message whatever its
    // source port; so is a BOOTREPLY to or from the server port. A relay
    // agent's BOOTREQUEST (67 to 67) passes.
    let reply = op.is_none_or(|op| op == dhcp::BOOTREPLY);
    let server = dst == dhcp::CLIENT_PORT
        || (src == dhcp::SERVER_PORT && reply)
        || (dst == dhcp::SERVER_PORT && op == Some(dhcp::BOOTREPLY));
    Ok(if server {
        FirstHop::DhcpServer
    } else {
        FirstHop::Other
    })
}

/// Inspects an IPv6 packet (checked with [`Ipv6Packet::new_checked`]).
pub fn inspect_ipv6(ip: &[u8]) -> Result<FirstHop, DropReason> {
    let ip = Ipv6Packet::new_unchecked(ip);
    let upper = ip.locate_upper_layer().map_err(|_| DropReason::Malformed)?;
    let first_fragment = match upper.fragment {
        Some(f) if f.offset != 0 => return Ok(FirstHop::Other),
        Some(f) => f.more,
        None => false,
    };
    let l4 = &ip.payload()[upper.offset..];
    match upper.protocol {
        protocol::ICMPV6 => {
            let Some(&kind) = l4.first() else {
                return if first_fragment {
                    Err(DropReason::Malformed)
                } else {
                    Ok(FirstHop::Other)
                };
            };
            if !(msg::ROUTER_SOLICIT..=msg::REDIRECT).contains(&kind) {
                return Ok(FirstHop::Other);
            }
            if upper.fragment.is_some() {
                return Err(DropReason::Malformed);
            }
            let icmp = Icmpv6Packet::new_checked(l4).map_err(|_| DropReason::Malformed)?;
            let target = icmp.target_addr().unwrap_or(Ipv6Addr::UNSPECIFIED);
            Ok(match kind {
                msg::ROUTER_SOLICIT => FirstHop::RouterSolicit,
                msg::ROUTER_ADVERT => FirstHop::RouterAdvert,
                msg::NEIGHBOR_SOLICIT => FirstHop::NeighborSolicit { target },
                msg::NEIGHBOR_ADVERT => FirstHop::NeighborAdvert { target },
                _ => FirstHop::Redirect { target },
            })
        }
        protocol::UDP => {
            let Some(ports) = l4.get(..udp::field::HEADER_LEN) else {
                return if first_fragment {
                    Err(DropReason::Malformed)
                } else {
                    Ok(FirstHop::Other)
                };
            };
            let src = u16::from_be_bytes([ports[0], ports[1]]);
            let dst = u16::from_be_bytes([ports[2], ports[3]]);
            let kind = l4.get(udp::field::HEADER_LEN).copied();
            // As for DHCPv4: anything to the client port, and a server
            // message to or from the server port.
            let server = dst == v6::CLIENT_PORT
                || (src == v6::SERVER_PORT && kind.is_none_or(v6::is_server_message))
                || (dst == v6::SERVER_PORT && kind.is_some_and(v6::is_server_message));
            Ok(if server {
                FirstHop::DhcpServer
            } else {
                FirstHop::Other
            })
        }
        _ => Ok(FirstHop::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::frame::ipv6::test_packet as v6;

    fn v4_udp(src: u16, dst: u16, payload: &[u8], frag: u16) -> Vec<u8> {
        let len = 20 + 8 + payload.len();
        let mut v = vec![0x45, 0];
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v.extend_from_slice(&[0, 1]);
        v.extend_from_slice(&frag.to_be_bytes());
        v.extend_from_slice(&[64, 17, 0, 0, 10, 0, 0, 1, 255, 255, 255, 255]);
        v.extend_from_slice(&src.to_be_bytes());
        v.extend_from_slice(&dst.to_be_bytes());
        v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        v
    }

    fn ra() -> Vec<u8> {
        vec![134, 0, 0, 0, 64, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    #[test]
    fn dhcpv4_server_messages() {
        let reply = [dhcp::BOOTREPLY; 240];
        let request = [dhcp::BOOTREQUEST; 240];
        let cases = [
            (67, 68, &reply[..], FirstHop::DhcpServer),
            (67, 68, &request[..], FirstHop::DhcpServer),
            (67, 67, &reply[..], FirstHop::DhcpServer),
            (67, 67, &request[..], FirstHop::Other), // a relay agent
            (68, 67, &request[..], FirstHop::Other), // a client
            (67, 5000, &request[..], FirstHop::Other),
            // Clients read anything sent to port 68: whatever the source
            // port, it is a server message (found in review).
            (53, 68, &reply[..], FirstHop::DhcpServer),
            (6767, 68, &reply[..], FirstHop::DhcpServer),
            (6767, 67, &reply[..], FirstHop::DhcpServer),
            (6767, 67, &request[..], FirstHop::Other),
        ];
        for (src, dst, payload, want) in cases {
            let p = v4_udp(src, dst, payload, 0);
            assert_eq!(inspect_ipv4(&p), Ok(want), "{src}->{dst} op {}", payload[0]);
        }
        // Later fragments carry no ports; a tiny first fragment hides them.
        let p = v4_udp(67, 68, &reply, 0x0010);
        assert_eq!(inspect_ipv4(&p), Ok(FirstHop::Other));
        let mut tiny = v4_udp(67, 68, &[], 0x2000);
        tiny.truncate(24);
        tiny[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(inspect_ipv4(&tiny), Err(DropReason::Malformed));
        tiny[6] = 0; // not a fragment: just a short datagram
        assert_eq!(inspect_ipv4(&tiny), Ok(FirstHop::Other));
    }

    #[test]
    fn dhcpv6_server_messages() {
        let udp = |src: u16, dst: u16, kind: u8| {
            let mut u = src.to_be_bytes().to_vec();
            u.extend_from_slice(&dst.to_be_bytes());
            u.extend_from_slice(&[0, 12, 0, 0, kind, 1, 2, 3]);
            u
        };
        for (src, dst, kind, want) in [
            (547, 546, v6::ADVERTISE, FirstHop::DhcpServer),
            (547, 546, v6::REPLY, FirstHop::DhcpServer),
            (547, 546, 1, FirstHop::DhcpServer), // any type, to a client port
            (547, 547, v6::RELAY_REPL, FirstHop::DhcpServer),
            (547, 547, v6::RECONFIGURE, FirstHop::DhcpServer),
            (547, 547, 12, FirstHop::Other), // RELAY-FORW, relay to server
            (546, 547, 1, FirstHop::Other),  // SOLICIT
            (5000, 546, v6::ADVERTISE, FirstHop::DhcpServer), // any source port
            (5000, 547, v6::REPLY, FirstHop::DhcpServer),
            (5000, 547, 1, FirstHop::Other),
        ] {
            let p = v6(17, &udp(src, dst, kind));
            assert_eq!(inspect_ipv6(&p), Ok(want), "{src}->{dst} type {kind}");
        }
        // Behind a hop-by-hop header too.
        let mut behind = vec![17, 0, 0, 0, 0, 0, 0, 0];
        behind.extend_from_slice(&udp(547, 546, v6::REPLY));
        assert_eq!(inspect_ipv6(&v6(0, &behind)), Ok(FirstHop::DhcpServer));
    }

    #[test]
    fn router_advertisements_are_found_behind_extension_headers() {
        assert_eq!(inspect_ipv6(&v6(58, &ra())), Ok(FirstHop::RouterAdvert));
        // Destination options, then AH, then the RA.
        let mut p = vec![51, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&[58, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&ra());
        assert_eq!(inspect_ipv6(&v6(60, &p)), Ok(FirstHop::RouterAdvert));
        // In a fragment (even an atomic one): RFC 6980 forbids it.
        for more in [0, 1] {
            let mut p = vec![58, 0, 0, more, 0, 0, 0, 9];
            p.extend_from_slice(&ra());
            assert_eq!(inspect_ipv6(&v6(44, &p)), Err(DropReason::Malformed));
        }
        // A first fragment that ends inside the header chain.
        let p = vec![60, 0, 0, 1, 0, 0, 0, 9, 58, 2, 0, 0, 0, 0, 0, 0];
        assert_eq!(inspect_ipv6(&v6(44, &p)), Err(DropReason::Malformed));
        // A first fragment whose upper-layer header is in the next one.
        let p = vec![58, 0, 0, 1, 0, 0, 0, 9];
        assert_eq!(inspect_ipv6(&v6(44, &p)), Err(DropReason::Malformed));
        // A fragment header nested in another (an atomic fragment inside a
        // first fragment) would hide where the upper layer starts: refused.
        let mut nested = vec![44, 0, 0, 1, 0, 0, 0, 1];
        nested.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(inspect_ipv6(&v6(44, &nested)), Err(DropReason::Malformed));
        // A later fragment has nothing to inspect.
        let mut p = vec![58, 0, 0, 0x08, 0, 0, 0, 9];
        p.extend_from_slice(&ra());
        assert_eq!(inspect_ipv6(&v6(44, &p)), Ok(FirstHop::Other));
    }

    #[test]
    fn neighbour_discovery_targets() {
        let target: Ipv6Addr = "fd00::11".parse().unwrap();
        for (kind, want) in [
            (135, FirstHop::NeighborSolicit { target }),
            (136, FirstHop::NeighborAdvert { target }),
        ] {
            let mut p = vec![kind, 0, 0, 0, 0, 0, 0, 0];
            p.extend_from_slice(&target.octets());
            assert_eq!(inspect_ipv6(&v6(58, &p)), Ok(want));
            assert!(want.is_ndp());
        }
        let mut redirect = vec![137, 0, 0, 0, 0, 0, 0, 0];
        redirect.extend_from_slice(&target.octets());
        redirect.extend_from_slice(&[0; 16]);
        assert_eq!(
            inspect_ipv6(&v6(58, &redirect)),
            Ok(FirstHop::Redirect { target })
        );
        // Cut short, or a bad option: malformed; echo: nothing to see.
        let p = vec![136, 0, 0, 0, 0, 0, 0, 0, 0xfd];
        assert_eq!(inspect_ipv6(&v6(58, &p)), Err(DropReason::Malformed));
        assert_eq!(inspect_ipv6(&v6(58, &[128, 0, 0, 0])), Ok(FirstHop::Other));
        assert!(!FirstHop::DhcpServer.is_ndp());
    }

    #[test]
    fn truncated_packets_never_panic() {
        let mut ra_in_ah = vec![58, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        ra_in_ah.extend_from_slice(&ra());
        let packets = [v6(51, &ra_in_ah), v6(44, &[17, 0, 0, 1, 0, 0, 0, 1, 2, 35])];
        for p in packets {
            for len in 40..=p.len() {
                let mut cut = p[..len].to_vec();
                cut[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                let _ = inspect_ipv6(&cut);
            }
        }
        let p = v4_udp(67, 68, &[2; 8], 0x2000);
        for len in 20..=p.len() {
            let mut cut = p[..len].to_vec();
            cut[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            let _ = inspect_ipv4(&cut);
        }
    }
}
