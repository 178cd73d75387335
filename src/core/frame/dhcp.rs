//! BOOTP/DHCP messages (RFC 951, RFC 2131): the fixed part only; and the
//! DHCPv6 ports and message types (RFC 8415) that tell a server's message.
//!
//! The bridge needs two things: set the broadcast flag (RFC 2131 section
//! 4.1, figure 2) in client requests, so that a server answers by broadcast
//! instead of unicast to `chaddr` (a virtual MAC the LAN never sees); and
//! tell server messages from client messages (DHCP snooping).

use super::{get_u16, set_u16, Error, Result};
use crate::core::mac::MacAddr;

/// Byte ranges of the fixed BOOTP header.
pub mod field {
    use std::ops::Range;

    /// Message op code: 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub const OP: usize = 0;
    /// Hardware address type (1 = Ethernet).
    pub const HTYPE: usize = 1;
    /// Hardware address length.
    pub const HLEN: usize = 2;
    /// Relay hops.
    pub const HOPS: usize = 3;
    /// Transaction id.
    pub const XID: Range<usize> = 4..8;
    /// Seconds since the client began.
    pub const SECS: Range<usize> = 8..10;
    /// Flags; the top bit is BROADCAST.
    pub const FLAGS: Range<usize> = 10..12;
    /// Client IP address.
    pub const CIADDR: Range<usize> = 12..16;
    /// "Your" IP address.
    pub const YIADDR: Range<usize> = 16..20;
    /// Next server IP address.
    pub const SIADDR: Range<usize> = 20..24;
    /// Relay agent IP address.
    pub const GIADDR: Range<usize> = 24..28;
    /// Client hardware address (16 bytes, padded).
    pub const CHADDR: Range<usize> = 28..44;
    /// Server host name.
    pub const SNAME: Range<usize> = 44..108;
    /// Boot file name.
    pub const FILE: Range<usize> = 108..236;
    /// Length of the fixed part, up to the DHCP magic cookie.
    pub const FIXED_LEN: usize = 236;
}

/// BOOTREQUEST op code.
pub const BOOTREQUEST: u8 = 1;
/// BOOTREPLY op code.
pub const BOOTREPLY: u8 = 2;
/// The BROADCAST bit of the flags field.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// UDP port of DHCP servers.
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;

/// DHCPv6 (RFC 8415 section 7): ports and the message types only servers
/// and relay agents send towards clients.
pub mod v6 {
    /// UDP port clients listen on.
    pub const CLIENT_PORT: u16 = 546;
    /// UDP port servers and relay agents listen on.
    pub const SERVER_PORT: u16 = 547;
    /// ADVERTISE (server to client).
    pub const ADVERTISE: u8 = 2;
    /// REPLY (server to client).
    pub const REPLY: u8 = 7;
    /// RECONFIGURE (server to client).
    pub const RECONFIGURE: u8 = 10;
    /// RELAY-REPL (server to relay agent, relay agent to relay agent).
    pub const RELAY_REPL: u8 = 13;

    /// True for the message types only a server (or a relay agent relaying
    /// a server's answer) sends.
    pub fn is_server_message(msg_type: u8) -> bool {
        matches!(msg_type, ADVERTISE | REPLY | RECONFIGURE | RELAY_REPL)
    }
}

/// A view over a BOOTP/DHCP message (the UDP payload).
#[derive(Debug, Clone)]
pub struct DhcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DhcpPacket<T> {
    /// Wraps bytes without checking them.
    pub fn new_unchecked(buffer: T) -> Self {
        DhcpPacket { buffer }
    }

    /// Wraps untrusted bytes: the fixed part (236 bytes) must be present.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < field::FIXED_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// Op code ([`BOOTREQUEST`] or [`BOOTREPLY`]).
    pub fn op(&self) -> u8 {
        self.buffer.as_ref()[field::OP]
    }

    /// Flags field.
    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLAGS.start)
    }

    /// True if the BROADCAST flag is set.
    pub fn broadcast(&self) -> bool {
        self.flags() & FLAG_BROADCAST != 0
    }

    /// The client's MAC, if the hardware type is Ethernet.
    pub fn chaddr(&self) -> Option<MacAddr> {
        let b = self.buffer.as_ref();
        (b[field::HTYPE] == 1 && b[field::HLEN] == 6)
            .then(|| MacAddr(b[field::CHADDR][..6].try_into().unwrap()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DhcpPacket<T> {
    /// Sets the flags field.
    pub fn set_flags(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::FLAGS.start, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_chaddr() {
        let mut buf = [0u8; field::FIXED_LEN];
        buf[field::OP] = BOOTREQUEST;
        buf[field::HTYPE] = 1;
        buf[field::HLEN] = 6;
        buf[field::CHADDR][..6].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        let mut p = DhcpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.op(), BOOTREQUEST);
        assert!(!p.broadcast());
        assert_eq!(p.chaddr(), Some(MacAddr([2, 0, 0, 0, 0, 7])));
        p.set_flags(p.flags() | FLAG_BROADCAST);
        assert!(p.broadcast());
        assert_eq!(&buf[10..12], &[0x80, 0x00]);
        assert_eq!(
            DhcpPacket::new_checked(&buf[..235]).unwrap_err(),
            Error::Truncated
        );
    }
}
