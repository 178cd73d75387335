//! An AF_PACKET raw socket on one NIC, for both capture and injection.
//!
//! One socket does both on purpose: a socket never sees the frames it
//! injected itself, so the bridge can't re-capture (and loop) its own output.
//!
//! Options:
//! - `PACKET_VNET_HDR`: every frame read is preceded by a `virtio_net_hdr`
//!   describing GSO super-frames and partial checksums (the NIC's default
//!   offloads stay on), and every frame written must be preceded by one too;
//! - `PACKET_IGNORE_OUTGOING`: the host's own outgoing frames are not
//!   captured. On Linux an AF_PACKET send goes out the wire, never into the
//!   host's stack, so forwarding the host's frames to the overlay would only
//!   teach virtual hosts to send to a MAC that can't answer for them.
//!   With host access ([`PacketSocket::open_with_host_resolution`]) a
//!   classic BPF filter keeps, of the outgoing frames, only ARP and ICMPv6
//!   neighbour solicitations instead: the host's address resolution, which
//!   the engine passes to the overlay so that a virtual host it asks for
//!   becomes known (the host then reaches it through its TAP);
//! - `PACKET_AUXDATA`: tells which frames carried a VLAN tag the kernel
//!   stripped, so the bridge can keep other VLANs out of the overlay;
//! - `PACKET_MR_ALLMULTI` membership: multicast reaches us without
//!   promiscuous mode (which Wi-Fi NICs can't do for foreign MACs anyway).
//!
//! The socket must be created in the NIC's network namespace: an ifindex
//! names a different device in another namespace.

use std::{
    io,
    mem::{size_of, size_of_val, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use tokio::io::unix::AsyncFd;

use crate::{
    core::{nat::PacketType, offload::VnetHdr},
    io::{plain, IoError},
};

/// One captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Bytes in the buffer (vnet header included).
    pub len: usize,
    /// What AF_PACKET says the frame was.
    pub pkt_type: PacketType,
    /// The VLAN id, when the kernel (or the NIC) stripped an 802.1Q tag from
    /// the frame and reported it in `PACKET_AUXDATA`.
    pub vlan: Option<u16>,
}

const fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Classic BPF: every frame that is not `PACKET_OUTGOING` passes; of the
/// outgoing ones only ARP and ICMPv6 neighbour solicitations (no extension
/// headers: next header 58 at byte 20, type 135 at byte 54) do.
static OUTGOING_RESOLUTION_ONLY: [libc::sock_filter; 11] = {
    const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    const LD_H_ABS: u32 = libc::BPF_LD | libc::BPF_H | libc::BPF_ABS;
    const LD_B_ABS: u32 = libc::BPF_LD | libc::BPF_B | libc::BPF_ABS;
    const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    const RET: u32 = libc::BPF_RET | libc::BPF_K;
    const PKTTYPE: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
    [
        bpf(LD_W_ABS, 0, 0, PKTTYPE),
        bpf(JEQ, 0, 7, libc::PACKET_OUTGOING as u32), // not outgoing: accept
        bpf(LD_H_ABS, 0, 0, 12),
        bpf(JEQ, 5, 0, libc::ETH_P_ARP as u32), // ARP: accept
        bpf(JEQ, 0, 5, libc::ETH_P_IPV6 as u32),
        bpf(LD_B_ABS, 0, 0, 20),
        bpf(JEQ, 0, 3, 58),
        bpf(LD_B_ABS, 0, 0, 54),
        bpf(JEQ, 0, 1, 135),
        bpf(RET, 0, 0, u32::MAX),
        bpf(RET, 0, 0, 0),
    ]
};

/// A raw packet socket bound to one interface.
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    iface: String,
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl PacketSocket {
    /// Opens the socket on interface `iface` (index `index`) in the current
    /// namespace, with a vnet header on every frame. Must run inside a tokio
    /// runtime.
    pub fn open(iface: &str, index: u32) -> Result<PacketSocket, IoError> {
        Self::open_inner(iface, index, false)
    }

    /// [`PacketSocket::open`], but the host's own outgoing ARP and neighbour
    /// solicitations are captured too (see the module docs).
    pub fn open_with_host_resolution(iface: &str, index: u32) -> Result<PacketSocket, IoError> {
        Self::open_inner(iface, index, true)
    }

    fn open_inner(iface: &str, index: u32, host_resolution: bool) -> Result<PacketSocket, IoError> {
        let err = |op: &'static str| {
            let e = io::Error::last_os_error();
            let hint = if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                " (lanbridge needs root or CAP_NET_RAW)"
            } else {
                ""
            };
            IoError::new(
                op,
                iface,
                io::Error::new(e.kind(), format!("{}{hint}", plain(&e))),
            )
        };
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                // Protocol 0: receive nothing until `bind` below names both
                // the protocol and the NIC, so no frame of another interface
                // is queued in between.
                0,
            )
        };
        if raw < 0 {
            return Err(err("cannot open AF_PACKET socket on"));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        let set = |name, what: &'static str| {
            setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, name, &one)
                .map_err(|e| IoError::new(what, iface, e))
        };
        set(libc::PACKET_VNET_HDR, "cannot enable PACKET_VNET_HDR on")?;
        // VLAN tags are stripped before capture and reported only here.
        set(libc::PACKET_AUXDATA, "cannot enable PACKET_AUXDATA on")?;
        if host_resolution {
            let prog = libc::sock_fprog {
                len: OUTGOING_RESOLUTION_ONLY.len() as u16,
                filter: OUTGOING_RESOLUTION_ONLY.as_ptr().cast_mut(),
            };
            setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &prog,
            )
            .map_err(|e| IoError::new("cannot attach a BPF filter to", iface, e))?;
        } else {
            set(
                libc::PACKET_IGNORE_OUTGOING,
                "cannot enable PACKET_IGNORE_OUTGOING (needs Linux 4.20) on",
            )?;
        }

        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(err("cannot bind AF_PACKET socket to"));
        }

        // SAFETY: all-zero is a valid packet_mreq.
        let mut mreq: libc::packet_mreq = unsafe { zeroed() };
        mreq.mr_ifindex = index as i32;
        mreq.mr_type = libc::PACKET_MR_ALLMULTI as u16;
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        )
        .map_err(|e| IoError::new("cannot join all-multicast on", iface, e))?;

        // SAFETY: the AsyncFd owns `fd` until it is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| {
            IoError::new(
                "cannot register AF_PACKET socket with tokio",
                iface,
                e.into(),
            )
        })?;
        Ok(PacketSocket {
            fd,
            iface: iface.to_string(),
        })
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Reads one frame (vnet header first) into `buf`. Returns what was
    /// captured, or `Ok(None)` for a frame longer than `buf` (truncated, so
    /// unusable) or of a type we don't know.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Captured>> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_once(fd.get_ref().as_raw_fd(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one frame without waiting; `frame` starts with its vnet header
    /// (the bridge builds both in one buffer, so nothing is copied here).
    /// [`PacketSocket::try_send_offload`] takes the header separately.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is a valid buffer of its length.
        let n = unsafe {
            libc::send(
                self.fd.get_ref().as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl PacketSocket {
    /// Sends `frame` behind the vnet header `hdr` without waiting or copying
    /// (two iovecs in one `sendmsg`). With a GSO `hdr` (and `NEEDS_CSUM`),
    /// the frame may be a super-frame far above the MTU, up to 64 KiB: the
    /// kernel segments it and fills in the checksums on the way out.
    pub fn try_send_offload(&self, hdr: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let hdr = hdr.to_bytes();
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: all-zero is a valid msghdr (no address: the socket is bound).
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: every iovec points to a live buffer of its length, which
        // the kernel only reads.
        let n = unsafe { libc::sendmsg(self.fd.get_ref().as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn recv_once(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Captured>> {
    // SAFETY: all-zero is a valid sockaddr_ll and msghdr.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one tpacket_auxdata control message, 8-byte aligned.
    let mut control = [0u64; 8];
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `msg` is valid for its length; MSG_TRUNC makes
    // the kernel return the real length even if it exceeds `buf`.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = n as usize;
    if len > buf.len() {
        return Ok(None);
    }
    let pkt_type = match addr.sll_pkttype {
        libc::PACKET_HOST => PacketType::Host,
        libc::PACKET_BROADCAST => PacketType::Broadcast,
        libc::PACKET_MULTICAST => PacketType::Multicast,
        libc::PACKET_OTHERHOST => PacketType::OtherHost,
        libc::PACKET_OUTGOING => PacketType::Outgoing,
        _ => return Ok(None),
    };
    let mut vlan = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // within msg_controllen; the payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    vlan = Some(aux.tp_vlan_tci & 0x0fff);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Some(Captured {
        len,
        pkt_type,
        vlan,
    }))
}
