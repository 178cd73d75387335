//! The UDP socket of the relay and of the edges' and bridges' uplinks.
//!
//! Buffers: a GSO super-frame or a burst of full-size frames becomes dozens
//! of datagrams at once; the kernel's default receive buffer (about 200 KiB)
//! overflows and drops them (`RcvbufErrors` in /proc/net/snmp). Ask for a
//! few MiB; as root, past `net.core.rmem_max`.
//!
//! Source addresses: bound to a wildcard address (`0.0.0.0`, `[::]`) on a
//! host with several addresses, a plain socket answers from whichever address
//! the routing table picks, and peers that sent to another one drop the
//! answer. So a wildcard relay socket reads each datagram's destination
//! address (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and sends from it.
//!
//! Batching: one system call per datagram is most of the cost of moving
//! them. Receiving, `UDP_GRO` lets the kernel hand over a run of same-sized
//! datagrams from one sender as one buffer plus their size (a cmsg), which
//! [`Received::datagrams`] cuts apart again. Sending, [`Socket::try_send_segments`]
//! passes a run of datagrams to one `sendmsg` with a `UDP_SEGMENT` cmsg (UDP
//! GSO: the kernel, or the NIC, cuts it), or, where the kernel or the route's
//! device can't, to `sendmmsg` (one call for up to 64 datagrams). Both
//! features date from Linux 4.18 / 5.0; without them the socket works the
//! same, only slower. std and tokio expose neither cmsgs nor `sendmmsg`,
//! hence the raw `libc` calls below, each under tokio's readiness tracking
//! (`async_io` / `try_io`).

use std::{
    io, mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
    sync::atomic::{AtomicBool, Ordering},
};

use nix::sys::socket::{getsockopt, setsockopt, sockopt, SockaddrLike, SockaddrStorage};
use tokio::{io::Interest, net::UdpSocket};
use tracing::debug;

use crate::io::{plain, IoError};

/// Socket buffer size requested for both directions.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// The largest UDP payload (over IPv4; IPv6 allows a little more, but a
/// datagram the relay can't pass on to every peer is no use).
pub const MAX_DATAGRAM: usize = 65507;

/// Receives per wake-up at most (see [`Socket::try_recv`]): a bound, so
/// that a flood on the socket can't starve the driver's other work.
pub const RECV_BURST: usize = 64;

/// A receive result as one step of a burst (see [`Socket::try_recv`]): the
/// batch, or `None` when the burst ends: nothing more is queued, or an
/// error, logged at debug (ICMP errors from earlier sends surface here; the
/// driver keeps going).
pub fn burst_step(r: io::Result<Received>) -> Option<Received> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => {
            debug!("recv: {}", plain(&e));
            None
        }
    }
}

/// At most this many datagrams per GSO send or `sendmmsg` call (the kernel's
/// `UDP_MAX_SEGMENTS` was 64 before Linux 6.9).
const MAX_BATCH: usize = 64;

/// At most this many bytes per GSO send: the whole run must fit in one IP
/// packet's length field, headers included.
const MAX_GSO_BYTES: usize = 65000;

/// Room for an `in6_pktinfo` (the larger pktinfo) plus a `UDP_GRO` or
/// `UDP_SEGMENT` cmsg, each with its header and padding (64 bytes on 64-bit
/// Linux); u64s for cmsghdr's alignment.
type Control = [u64; 16];

/// Binds a UDP socket on `addr` and enlarges its buffers.
async fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, IoError> {
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

/// A UDP socket with big buffers, destination addresses (optionally), UDP
/// GRO and UDP GSO (where the kernel has them).
pub struct Socket {
    socket: UdpSocket,
    /// Reads destination addresses and sends from the given local address.
    pktinfo: bool,
    /// The kernel may coalesce received datagrams.
    gro: bool,
    /// Sends use UDP GSO; cleared for good when the route can't do it.
    gso: AtomicBool,
}

/// What one [`Socket::recv`] returned: `len` bytes at the start of the
/// buffer. When `segment` < `len`, they are several datagrams of `segment`
/// bytes (the last may be shorter) that the kernel coalesced (UDP GRO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes received.
    pub len: usize,
    /// The size of each datagram but the last (`len` when only one).
    pub segment: usize,
    /// The sender.
    pub from: SocketAddr,
    /// The address the datagrams were sent to, on a pktinfo socket.
    pub local: Option<IpAddr>,
}

impl Received {
    /// The datagrams, in order. `buf` is the buffer given to
    /// [`Socket::recv`]; an empty datagram is one (empty) datagram.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        let len = self.len.min(buf.len());
        let buf = &buf[..len];
        let step = if self.segment == 0 || self.segment >= len {
            len.max(1)
        } else {
            self.segment
        };
        let count = len.div_ceil(step).max(1);
        (0..count).map(move |i| &buf[i * step..((i + 1) * step).min(len)])
    }
}

impl Socket {
    /// Binds `addr` with big buffers. `pktinfo`: read each datagram's
    /// destination address and send from the one given (only meaningful on
    /// a wildcard address). Turns UDP GRO on and checks for UDP GSO; the
    /// kernel lacking either only makes the socket slower.
    pub async fn bind(addr: SocketAddr, pktinfo: bool) -> Result<Socket, IoError> {
        let socket = bind_udp(addr).await?;
        if pktinfo {
            let r = if addr.is_ipv4() {
                setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
            } else {
                setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
            };
            r.map_err(|e| IoError::new("cannot enable IP_PKTINFO on", addr.to_string(), e.into()))?;
        }
        let gro = match setsockopt(&socket, sockopt::UdpGroSegment, &true) {
            Ok(()) => true,
            Err(e) => {
                debug!("no UDP GRO: {}", plain(&e.into()));
                false
            }
        };
        let gso = match getsockopt(&socket, sockopt::UdpGsoSegment) {
            Ok(_) => true,
            Err(e) => {
                debug!("no UDP GSO: {}", plain(&e.into()));
                false
            }
        };
        Ok(Socket {
            socket,
            pktinfo,
            gro,
            gso: AtomicBool::new(gso),
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Whether sends of several datagrams use UDP GSO.
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Whether received datagrams may arrive coalesced.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// Waits for a datagram, or a GRO batch of datagrams, in `buf` (make it
    /// 64 KiB: a batch is up to that).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.socket
            .async_io(Interest::READABLE, || {
                recv_msg(self.socket.as_raw_fd(), buf)
            })
            .await
    }

    /// [`Socket::recv`] without waiting: `WouldBlock` when nothing is
    /// queued. Drivers take what is already queued after each wake-up (up
    /// to [`RECV_BURST`] receives), so that where the kernel does not
    /// coalesce (no UDP GRO on the path, e.g. a veth without NAPI) the
    /// segments of one flow still meet in one batch, and forwards share GSO
    /// sends, without waiting for anything that has not arrived.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.socket.try_io(Interest::READABLE, || {
            recv_msg(self.socket.as_raw_fd(), buf)
        })
    }

    /// Sends one datagram without waiting, from `local` when given (on a
    /// pktinfo socket).
    pub fn try_send(&self, buf: &[u8], to: SocketAddr, local: Option<IpAddr>) -> io::Result<()> {
        match local {
            Some(local) if self.pktinfo => {
                let name = SockaddrStorage::from(to);
                self.socket.try_io(Interest::WRITABLE, || {
                    send_msg(self.socket.as_raw_fd(), buf, &name, Some(local), None)
                })
            }
            _ => self.socket.try_send_to(buf, to).map(|_| ()),
        }
    }

    /// Sends the datagrams in `buf` to `to` without waiting, from `local`
    /// when given (on a pktinfo socket). They lie back to back, each
    /// `segment` bytes but the last, which may be shorter.
    ///
    /// Uses UDP GSO (runs of at most 64 datagrams and 65000 bytes), else
    /// `sendmmsg`. Returns how many datagrams were not sent: all of them for
    /// a `segment` of 0 or above [`MAX_DATAGRAM`]; all those left when the
    /// socket buffer is full.
    pub fn try_send_segments(
        &self,
        buf: &[u8],
        segment: usize,
        to: SocketAddr,
        local: Option<IpAddr>,
    ) -> usize {
        if buf.is_empty() {
            return 0;
        }
        if segment == 0 || segment > MAX_DATAGRAM {
            return count(buf.len(), segment);
        }
        let local = local.filter(|_| self.pktinfo);
        let name = SockaddrStorage::from(to);
        let fd = self.socket.as_raw_fd();
        let per_send = (MAX_GSO_BYTES / segment).clamp(1, MAX_BATCH);
        let mut unsent = 0;
        let mut rest = buf;
        while !rest.is_empty() {
            let (part, after) = rest.split_at((per_send * segment).min(rest.len()));
            rest = after;
            let n = count(part.len(), segment);
            if n > 1 && self.gso() {
                // `segment` ≤ MAX_DATAGRAM < u16::MAX.
                let size = Some(segment as u16);
                match self.socket.try_io(Interest::WRITABLE, || {
                    send_msg(fd, part, &name, local, size)
                }) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return unsent + n + count(rest.len(), segment);
                    }
                    // This route can't (a segment above its path MTU): this
                    // send goes datagram by datagram, the next tries again.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) if gso_unsupported(&e) => {
                        if self.gso.swap(false, Ordering::Relaxed) {
                            debug!(
                                "UDP GSO to {to} failed ({}); sending datagram by datagram",
                                plain(&e)
                            );
                        }
                    }
                    Err(_) => {
                        unsent += n;
                        continue;
                    }
                }
            }
            let (failed, blocked) = self.send_each(part, segment, &name, local);
            unsent += failed;
            if blocked {
                return unsent + count(rest.len(), segment);
            }
        }
        unsent
    }

    /// Sends `part`'s datagrams with `sendmmsg`; returns how many were not
    /// sent and whether the socket buffer filled up (the count then includes
    /// all those after).
    fn send_each(
        &self,
        mut part: &[u8],
        segment: usize,
        name: &SockaddrStorage,
        local: Option<IpAddr>,
    ) -> (usize, bool) {
        let fd = self.socket.as_raw_fd();
        let mut failed = 0;
        // Each round sends or skips at least one datagram.
        while !part.is_empty() {
            match self.socket.try_io(Interest::WRITABLE, || {
                send_mmsg(fd, part, segment, name, local)
            }) {
                Ok(sent) => part = &part[(sent * segment).min(part.len())..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (failed + count(part.len(), segment), true);
                }
                // The error is the first datagram's.
                Err(_) => {
                    failed += 1;
                    part = &part[segment.min(part.len())..];
                }
            }
        }
        (failed, false)
    }

    /// A socket that never uses UDP GSO, to test `sendmmsg`.
    #[cfg(test)]
    fn without_gso(self) -> Socket {
        self.gso.store(false, Ordering::Relaxed);
        self
    }
}

/// How many datagrams `len` bytes of `segment`-byte datagrams are (one when
/// `segment` is 0).
fn count(len: usize, segment: usize) -> usize {
    match segment {
        0 => usize::from(len > 0),
        _ => len.div_ceil(segment),
    }
}

/// Whether a GSO send failed because the kernel or the route's device can't
/// segment (the same datagrams may go one by one).
fn gso_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EOPNOTSUPP))
}

/// `recvmsg`: one datagram or GRO batch, its source, its destination
/// address (pktinfo) and its segment size (GRO).
fn recv_msg(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: all-zero is valid for these plain C structs.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control: Control = [0; 16];
    // SAFETY: as above.
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
    let len = n as usize;
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
    let mut segment = len;
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
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let size: libc::c_int = std::ptr::read_unaligned(data.cast());
                    if let Ok(size @ 1..) = usize::try_from(size) {
                        segment = size.min(len);
                    }
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received {
        len,
        segment,
        from,
        local,
    })
}

/// Writes the cmsgs for a send from `local` (pktinfo) and of `segment`-byte
/// datagrams (GSO) into `control`; returns their length.
fn put_control(control: &mut Control, local: Option<IpAddr>, segment: Option<u16>) -> usize {
    let mut len = 0;
    if let Some(local) = local {
        match local {
            IpAddr::V4(ip) => {
                // SAFETY: all-zero is a valid in_pktinfo.
                let mut info: libc::in_pktinfo = unsafe { mem::zeroed() };
                info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
                len = put_cmsg(control, len, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
            }
            IpAddr::V6(ip) => {
                // SAFETY: all-zero is a valid in6_pktinfo.
                let mut info: libc::in6_pktinfo = unsafe { mem::zeroed() };
                info.ipi6_addr.s6_addr = ip.octets();
                len = put_cmsg(control, len, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
            }
        }
    }
    if let Some(segment) = segment {
        len = put_cmsg(control, len, libc::SOL_UDP, libc::UDP_SEGMENT, segment);
    }
    len
}

/// Writes one cmsg carrying `data` at byte `offset` of `control`; returns
/// the offset after it. Panics if it doesn't fit (the callers' cmsgs always
/// do).
fn put_cmsg<T: Copy>(
    control: &mut Control,
    offset: usize,
    level: i32,
    kind: i32,
    data: T,
) -> usize {
    // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(mem::size_of::<T>() as u32) as usize,
            libc::CMSG_LEN(mem::size_of::<T>() as u32) as usize,
        )
    };
    assert!(
        offset + space <= mem::size_of::<Control>(),
        "cmsg buffer too small"
    );
    // SAFETY: `offset` is a multiple of CMSG_ALIGN (a sum of CMSG_SPACEs)
    // in a u64-aligned buffer, so the header is aligned; header and data lie
    // within the buffer (checked above); the data is written unaligned.
    unsafe {
        let cmsg = control
            .as_mut_ptr()
            .cast::<u8>()
            .add(offset)
            .cast::<libc::cmsghdr>();
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<T>(), data);
    }
    offset + space
}

/// One `sendmsg` of `buf` to `name`, from `local` if given, cut into
/// `segment`-byte datagrams by the kernel if given.
fn send_msg(
    fd: RawFd,
    buf: &[u8],
    name: &SockaddrStorage,
    local: Option<IpAddr>,
    segment: Option<u16>,
) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control: Control = [0; 16];
    let control_len = put_control(&mut control, local, segment);
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = name.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = name.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if control_len > 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_len;
    }
    // SAFETY: every pointer in `msg` is valid for its length; the kernel
    // only reads through them.
    if unsafe { libc::sendmsg(fd, &msg, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `sendmmsg` of up to [`MAX_BATCH`] of `buf`'s `segment`-byte datagrams
/// to `name`, from `local` if given; returns how many the kernel took (at
/// least one).
fn send_mmsg(
    fd: RawFd,
    buf: &[u8],
    segment: usize,
    name: &SockaddrStorage,
    local: Option<IpAddr>,
) -> io::Result<usize> {
    let mut control: Control = [0; 16];
    let control_len = put_control(&mut control, local, None);
    // SAFETY: all-zero is valid for these plain C structs (null pointers,
    // zero lengths).
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut n = 0;
    for (datagram, (iov, m)) in buf
        .chunks(segment.max(1))
        .zip(iovs.iter_mut().zip(msgs.iter_mut()))
    {
        iov.iov_base = datagram.as_ptr() as *mut libc::c_void;
        iov.iov_len = datagram.len();
        let msg = &mut m.msg_hdr;
        msg.msg_name = name.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = name.len();
        msg.msg_iov = iov;
        msg.msg_iovlen = 1;
        if control_len > 0 {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control_len;
        }
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: the first `n` entries of `msgs` point into `iovs`, `buf`,
    // `name` and `control`, all alive and valid for their lengths; the
    // kernel only reads through them and writes `msg_len`.
    let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    match sent {
        ..0 => Err(io::Error::last_os_error()),
        0 => Err(io::Error::other("sendmmsg sent nothing")),
        _ => Ok(sent as usize),
    }
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        for addr in ["192.0.2.7:7171", "[2001:db8::5]:9", "[fe80::1%3]:4000"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(to_std(&SockaddrStorage::from(addr)), Some(addr));
        }
    }

    fn received(len: usize, segment: usize) -> Received {
        Received {
            len,
            segment,
            from: "192.0.2.1:1".parse().unwrap(),
            local: None,
        }
    }

    fn lens(r: Received, buf: &[u8]) -> Vec<usize> {
        r.datagrams(buf).map(<[u8]>::len).collect()
    }

    #[test]
    fn received_splits_into_datagrams() {
        let buf: Vec<u8> = (0..=255).collect();
        assert_eq!(lens(received(100, 100), &buf), [100]);
        assert_eq!(lens(received(100, 0), &buf), [100]);
        assert_eq!(lens(received(100, 200), &buf), [100]);
        assert_eq!(lens(received(100, 25), &buf), [25, 25, 25, 25]);
        assert_eq!(lens(received(100, 30), &buf), [30, 30, 30, 10]);
        assert_eq!(lens(received(100, 99), &buf), [99, 1]);
        assert_eq!(lens(received(0, 0), &buf), [0]);
        // A length past the buffer is cut to it rather than panicking.
        assert_eq!(lens(received(1000, 100), &buf), [100, 100, 56]);
        let parts: Vec<&[u8]> = received(10, 4).datagrams(&buf).collect();
        assert_eq!(parts, [&buf[0..4], &buf[4..8], &buf[8..10]]);
    }

    /// `count` datagrams of `segment` bytes, the last `last` bytes, each
    /// byte telling its datagram and position apart.
    fn datagrams(count: usize, segment: usize, last: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                let len = if i + 1 == count { last } else { segment };
                (0..len).map(|j| (i * 7 + j * 13) as u8).collect()
            })
            .collect()
    }

    /// Receives until `want` datagrams came or a second passed; also returns
    /// how many arrived coalesced.
    async fn collect(socket: &Socket, want: usize) -> (Vec<Vec<u8>>, usize) {
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        let mut coalesced = 0;
        while got.len() < want {
            let r = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await;
            let Ok(r) = r else { break };
            let r = r.unwrap();
            let before = got.len();
            got.extend(r.datagrams(&buf).map(<[u8]>::to_vec));
            if got.len() - before > 1 {
                coalesced += got.len() - before;
            }
        }
        (got, coalesced)
    }

    async fn send_and_receive(ip: &str, gso: bool) {
        let receiver = Socket::bind(format!("{ip}:0").parse().unwrap(), false)
            .await
            .unwrap();
        let mut sender = Socket::bind(format!("{ip}:0").parse().unwrap(), false)
            .await
            .unwrap();
        if !gso {
            sender = sender.without_gso();
        }
        sender.socket.writable().await.unwrap();
        let to = receiver.local_addr().unwrap();
        // 150 datagrams: more than one send (64 per send) and more than one
        // GRO batch.
        for (count, segment, last) in [(150, 1200, 345), (5, 100, 100), (1, 500, 17)] {
            let sent = datagrams(count, segment, last);
            let unsent = sender.try_send_segments(&sent.concat(), segment, to, None);
            assert_eq!(unsent, 0);
            let (got, coalesced) = collect(&receiver, count).await;
            assert_eq!(got, sent, "{count} datagrams of {segment} bytes");
            eprintln!(
                "{ip} gso={} (asked {gso}) gro={}: {count}×{segment}: {coalesced} coalesced",
                sender.gso(),
                receiver.gro()
            );
        }
        if gso {
            assert!(
                sender.gso(),
                "UDP GSO over loopback should work on Linux ≥ 4.18"
            );
        }
    }

    #[tokio::test]
    async fn gso_send_arrives_whole_and_in_order() {
        send_and_receive("127.0.0.1", true).await;
        send_and_receive("[::1]", true).await;
    }

    #[tokio::test]
    async fn sendmmsg_send_arrives_whole_and_in_order() {
        send_and_receive("127.0.0.1", false).await;
        send_and_receive("[::1]", false).await;
    }

    /// A GSO send the kernel refuses with `EINVAL` goes out datagram by
    /// datagram; GSO stays on for the next send (`EINVAL` can be one route's
    /// path MTU, not the kernel). Checksum-less UDP (`SO_NO_CHECK`, no root
    /// needed) is one thing the kernel refuses to segment.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[tokio::test]
    async fn refused_gso_falls_back_for_that_send() {
        const SO_NO_CHECK: libc::c_int = 11;
        let receiver = Socket::bind("127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        let sender = Socket::bind("127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        if !sender.gso() {
            return;
        }
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the size given.
        let r = unsafe {
            libc::setsockopt(
                sender.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                mem::size_of_val(&one) as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
        sender.socket.writable().await.unwrap();
        let to = receiver.local_addr().unwrap();
        for _ in 0..2 {
            let sent = datagrams(10, 100, 50);
            assert_eq!(sender.try_send_segments(&sent.concat(), 100, to, None), 0);
            assert!(sender.gso());
            let (got, _) = collect(&receiver, 10).await;
            assert_eq!(got, sent);
        }
    }

    #[tokio::test]
    async fn bad_segments_count_as_unsent() {
        let socket = Socket::bind("127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        let to = socket.local_addr().unwrap();
        let buf = vec![0u8; 70000];
        assert_eq!(socket.try_send_segments(&buf, 0, to, None), 1);
        assert_eq!(socket.try_send_segments(&buf, 65508, to, None), 2);
        assert_eq!(
            socket.try_send_segments(&buf[..10], usize::MAX, to, None),
            1
        );
        assert_eq!(socket.try_send_segments(&[], 0, to, None), 0);
        assert_eq!(socket.try_send_segments(&[], 1200, to, None), 0);
    }

    #[tokio::test]
    async fn wildcard_socket_reports_the_destination_and_answers_from_it() {
        let relay = Socket::bind("0.0.0.0:0".parse().unwrap(), true)
            .await
            .unwrap();
        let port = relay.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // 127.0.0.2 is a loopback address too, but not the one the kernel
        // would pick as a source towards 127.0.0.1.
        client.send_to(b"ping", ("127.0.0.2", port)).await.unwrap();
        let mut buf = [0u8; 16];
        let r = relay.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..r.len], b"ping");
        assert_eq!(r.from, client.local_addr().unwrap());
        assert_eq!(r.local, Some("127.0.0.2".parse().unwrap()));
        relay.try_send(b"pong", r.from, r.local).unwrap();
        let (n, replier) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(replier, SocketAddr::from(([127, 0, 0, 2], port)));
        // Several datagrams from it too (pktinfo and GSO cmsgs together).
        let unsent = relay.try_send_segments(b"abcdefg", 3, r.from, r.local);
        assert_eq!(unsent, 0);
        for want in [&b"abc"[..], b"def", b"g"] {
            let (n, replier) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], want);
            assert_eq!(replier, SocketAddr::from(([127, 0, 0, 2], port)));
        }
    }
}

/// Datagrams for one destination, back to back, to leave in one UDP GSO
/// send ([`Socket::try_send_segments`]): all of one size but the last, which
/// may be shorter. A frame's fragments always are; the datagrams of several
/// frames, or a relay's run of forwards to one peer, often are too.
/// [`SendBatch::push`] sends what is held first when the next datagram
/// can't join it.
#[derive(Debug, Default)]
pub struct SendBatch {
    buf: Vec<u8>,
    segment: usize,
    /// A shorter datagram ended the run: the next one starts another.
    closed: bool,
    to: Option<(SocketAddr, Option<IpAddr>)>,
}

impl SendBatch {
    /// Adds a datagram for `to` (sent from `local`, see [`Socket::try_send`]);
    /// returns how many datagrams failed to send in the flush this caused.
    // HOT PATH
    pub fn push(
        &mut self,
        socket: &Socket,
        datagram: &[u8],
        to: SocketAddr,
        local: Option<IpAddr>,
    ) -> usize {
        let mut failed = 0;
        if !self.buf.is_empty()
            && (self.closed
                || datagram.len() > self.segment
                || self.to != Some((to, local))
                || self.buf.len() + datagram.len() > MAX_GSO_BYTES)
        {
            failed = self.flush(socket);
        }
        if self.buf.is_empty() {
            self.segment = datagram.len();
            self.to = Some((to, local));
        }
        self.closed = datagram.len() < self.segment;
        self.buf.extend_from_slice(datagram);
        failed
    }

    /// Sends what is held; returns how many datagrams failed to send.
    pub fn flush(&mut self, socket: &Socket) -> usize {
        let failed = match self.to {
            Some((to, local)) if !self.buf.is_empty() => {
                socket.try_send_segments(&self.buf, self.segment, to, local)
            }
            _ => 0,
        };
        self.buf.clear();
        self.closed = false;
        failed
    }
}
