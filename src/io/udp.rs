//! UDP sockets with buffers sized for bursts.
//!
//! A GSO super-frame or a burst of full-size frames becomes dozens of
//! datagrams at once; the kernel's default receive buffer (about 200 KiB)
//! overflows and drops them (`RcvbufErrors` in /proc/net/snmp). Ask for a
//! few MiB; as root, past `net.core.rmem_max`.

use std::{
    io, mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
};

use nix::sys::socket::{setsockopt, sockopt, SockaddrLike, SockaddrStorage};
use tokio::{io::Interest, net::UdpSocket};
use tracing::debug;

use crate::io::{plain, IoError};

/// Socket buffer size requested for both directions.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Binds a UDP socket on `addr` and enlarges its buffers.
pub async fn bind(addr: SocketAddr) -> Result<UdpSocket, IoError> {
    let socket = UdpSocket::bind(addr)
        .await
        .map_err(|e| IoError::new("cannot bind UDP socket to", addr.to_string(), e))?;
    // The *Force options need CAP_NET_ADMIN; without it, fall back to what
    // rmem_max/wmem_max allow. Small buffers only cost throughput.
    if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        if let Err(e) = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER) {
            debug!("SO_RCVBUF: {}", plain(&e.into()));
        }
    }
    if setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        if let Err(e) = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER) {
            debug!("SO_SNDBUF: {}", plain(&e.into()));
        }
    }
    Ok(socket)
}

/// The relay's socket. Bound to a wildcard address (`0.0.0.0`, `[::]`) on a
/// host with several addresses, a plain socket would answer from whichever
/// address the routing table picks, and peers that sent to another one drop
/// the answer. So on a wildcard socket the relay reads each datagram's
/// destination address (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and sends from it.
pub struct RelaySocket {
    socket: UdpSocket,
    pktinfo: bool,
}

impl RelaySocket {
    /// Binds `addr` with large buffers; asks for destination addresses when
    /// `addr` is a wildcard.
    pub async fn bind(addr: SocketAddr) -> Result<RelaySocket, IoError> {
        let socket = bind(addr).await?;
        let pktinfo = addr.ip().is_unspecified();
        if pktinfo {
            let r = if addr.is_ipv4() {
                setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
            } else {
                setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
            };
            r.map_err(|e| IoError::new("cannot enable IP_PKTINFO on", addr.to_string(), e.into()))?;
        }
        Ok(RelaySocket { socket, pktinfo })
    }

    /// Waits for a datagram: its length, its source, and the local address
    /// it was sent to (on a wildcard socket).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        if !self.pktinfo {
            let (n, from) = self.socket.recv_from(buf).await?;
            return Ok((n, from, None));
        }
        self.socket
            .async_io(Interest::READABLE, || {
                recv_with_dst(self.socket.as_raw_fd(), buf)
            })
            .await
    }

    /// Sends without waiting, from `local` when given.
    pub fn try_send(&self, buf: &[u8], to: SocketAddr, local: Option<IpAddr>) -> io::Result<()> {
        match local {
            Some(local) if self.pktinfo => self.socket.try_io(Interest::WRITABLE, || {
                send_from(self.socket.as_raw_fd(), buf, to, local)
            }),
            _ => self.socket.try_send_to(buf, to).map(|_| ()),
        }
    }
}

/// `recvmsg` that also returns the datagram's destination address.
fn recv_with_dst(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: all-zero is valid for these plain C structs.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` is valid for its length.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `name` with `msg_namelen` bytes.
    let name = unsafe {
        SockaddrStorage::from_raw(
            (&name as *const libc::sockaddr_storage).cast(),
            Some(msg.msg_namelen),
        )
    };
    let from = name
        .as_ref()
        .and_then(to_std)
        .ok_or_else(|| io::Error::other("datagram from an unknown address family"))?;
    let mut local = None;
    // SAFETY: the CMSG_* macros walk the buffer the kernel filled, within
    // msg_controllen; payloads are read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, from, local))
}

/// `sendmsg` from the local address `local`.
fn send_from(fd: RawFd, buf: &[u8], to: SocketAddr, local: IpAddr) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let name = SockaddrStorage::from(to);
    let mut control = [0u64; 16];
    // SAFETY: all-zero is a valid msghdr; pointers below are valid for their
    // lengths; the CMSG_* macros write within the control buffer, which is
    // large enough for one pktinfo message of either family.
    unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_name = name.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = name.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        let (level, kind, len) = match local {
            IpAddr::V4(_) => (
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                mem::size_of::<libc::in_pktinfo>(),
            ),
            IpAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                mem::size_of::<libc::in6_pktinfo>(),
            ),
        };
        msg.msg_controllen = libc::CMSG_SPACE(len as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as usize;
        let data = libc::CMSG_DATA(cmsg);
        match local {
            IpAddr::V4(ip) => {
                let mut info: libc::in_pktinfo = mem::zeroed();
                info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
                std::ptr::write_unaligned(data.cast(), info);
            }
            IpAddr::V6(ip) => {
                let mut info: libc::in6_pktinfo = mem::zeroed();
                info.ipi6_addr.s6_addr = ip.octets();
                std::ptr::write_unaligned(data.cast(), info);
            }
        }
        if libc::sendmsg(fd, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A socket address from the kernel, as std's type (IPv4 or IPv6 only).
fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        for addr in ["192.0.2.7:7171", "[2001:db8::5]:9", "[fe80::1%3]:4000"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(to_std(&SockaddrStorage::from(addr)), Some(addr));
        }
    }

    #[tokio::test]
    async fn wildcard_socket_reports_the_destination_and_answers_from_it() {
        let relay = RelaySocket::bind("0.0.0.0:0".parse().unwrap())
            .await
            .unwrap();
        let port = relay.socket.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // 127.0.0.2 is a loopback address too, but not the one the kernel
        // would pick as a source towards 127.0.0.1.
        client.send_to(b"ping", ("127.0.0.2", port)).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from, local) = relay.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, client.local_addr().unwrap());
        assert_eq!(local, Some("127.0.0.2".parse().unwrap()));
        relay.try_send(b"pong", from, local).unwrap();
        let (n, replier) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(replier, SocketAddr::from(([127, 0, 0, 2], port)));
    }
}
