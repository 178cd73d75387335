//! A TAP device, driven by tokio, in one of two modes.
//!
//! * **Plain** (`offload: false`): opened through the tun-tap crate, one
//!   Ethernet frame per read or write, nothing in front of it. The kernel
//!   hands us only wire-ready frames: it segments and checksums everything
//!   itself before the TAP, because the device claims no offloads.
//! * **Vnet** (`offload: true`): opened by hand (`/dev/net/tun`,
//!   `TUNSETIFF` with `IFF_VNET_HDR`, `TUNSETVNETHDRSZ`, `TUNSETOFFLOAD`),
//!   because tun-tap can't ask for a vnet header. Every frame read or written
//!   is preceded by a 10-byte `struct virtio_net_hdr` ([`VnetHdr`]), and the
//!   device announces checksum offload and TSO (and USO where the kernel has
//!   it). The kernel then hands us TCP/UDP *super-frames* of up to 64 KiB
//!   with partial checksums, and takes super-frames back: segmentation and
//!   checksums happen in the kernels at both ends, not in lanbridge, which
//!   moves one frame where it would otherwise move forty.
//!
//! The header travels in its own iovec (`readv`/`writev`), so a frame lands
//! at the start of the caller's buffer and is sent from it with no copy.
//!
//! A read buffer too small for the frame truncates it without an error: the
//! read returns the bytes that fit, nothing tells the frame was longer (seen
//! on Linux 6.18). So in vnet mode [`Tap::recv`] takes a frame that fills the
//! whole buffer for a truncated one and reports `InvalidData`; callers pass
//! 65536 + 64 bytes, more than any frame (IPv4 and IPv6 lengths stop at
//! 64 KiB).
//!
//! The device lives as long as this value. Its file descriptor keeps working
//! if someone moves the interface into another network namespace.

use std::{
    fs::File,
    io::{self, IoSlice, IoSliceMut, Read, Write},
    os::fd::{AsRawFd, RawFd},
};

use tokio::io::unix::AsyncFd;
use tracing::debug;
use tun_tap::{Iface, Mode};

use crate::{
    core::{
        drop::DropReason,
        offload::{self, VnetHdr},
    },
    io::{check_ifname, plain, IoError},
};

/// A TAP device (Ethernet frames, no packet-info prefix), plain or with
/// vnet headers (see the module docs).
pub struct Tap {
    fd: AsyncFd<Dev>,
    name: String,
}

/// The open device: tun-tap's `Iface` (plain), or our own fd (vnet).
enum Dev {
    Plain(Iface),
    Vnet(File),
}

impl AsRawFd for Dev {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Dev::Plain(iface) => iface.as_raw_fd(),
            Dev::Vnet(file) => file.as_raw_fd(),
        }
    }
}

/// The tun ioctls tun-tap doesn't make. Numbers and flags come from libc,
/// which copies them from `include/uapi/linux/if_tun.h`.
mod ioctl {
    // TUNSETIFF reads the ifreq and writes the chosen name back into it,
    // hence read-write rather than a `*const` argument.
    nix::ioctl_readwrite_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_write_ptr_bad!(tun_set_vnet_hdr_sz, libc::TUNSETVNETHDRSZ, libc::c_int);
    // TUNSETOFFLOAD takes the flags as the argument itself, not a pointer.
    nix::ioctl_write_int_bad!(tun_set_offload, libc::TUNSETOFFLOAD);
}

/// The offloads a vnet TAP announces: checksums, and TSO for IPv4, IPv6 and
/// ECN flows. The kernel sends us super-frames only of these kinds.
const OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
/// UDP segmentation offload, tried on top of [`OFFLOADS`] (Linux 6.2 and
/// later; older kernels answer EINVAL).
const OFFLOADS_USO: libc::c_uint = libc::TUN_F_USO4 | libc::TUN_F_USO6;

/// The `IoError` for a failed open step, with a hint for the usual causes.
fn open_error(op: &'static str, name: &str, e: io::Error) -> IoError {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => " (lanbridge needs root or CAP_NET_ADMIN)",
        Some(libc::EBUSY) => " (the device is in use by another process)",
        Some(libc::ENOENT) => " (is the tun module loaded? /dev/net/tun is missing)",
        _ => "",
    };
    IoError::new(
        op,
        name,
        io::Error::new(e.kind(), format!("{}{hint}", plain(&e))),
    )
}

impl Tap {
    /// Creates (or attaches to) the TAP `name`, with vnet headers and
    /// offloads when `offload` is true (see the module docs). Must run inside
    /// a tokio runtime.
    pub fn open(name: &str, offload: bool) -> Result<Tap, IoError> {
        check_ifname(name)?;
        let (dev, name) = if offload {
            open_vnet(name)?
        } else {
            let iface = Iface::without_packet_info(name, Mode::Tap)
                .map_err(|e| open_error("cannot create TAP", name, e))?;
            let name = iface.name().to_string();
            (Dev::Plain(iface), name)
        };
        set_nonblocking(dev.as_raw_fd())
            .map_err(|e| IoError::new("cannot set non-blocking on TAP", &name, e))?;
        // SAFETY: the fd belongs to `dev`, which the AsyncFd owns until drop.
        let fd = unsafe { AsyncFd::register(dev) }
            .map_err(|e| IoError::new("cannot register TAP with tokio", &name, e.into()))?;
        Ok(Tap { fd, name })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when frames carry vnet headers and may be super-frames.
    pub fn offload(&self) -> bool {
        matches!(self.fd.get_ref(), Dev::Vnet(_))
    }

    /// Reads one frame into `buf[..n]` and returns its vnet header (always
    /// [`VnetHdr::NONE`] in plain mode) and `n`. `buf` must hold the largest
    /// frame: MTU + 14 in plain mode; in vnet mode more than the largest
    /// super-frame (65536 + 64 bytes), since a frame that fills `buf` counts
    /// as truncated.
    ///
    /// In vnet mode, a header that is short or has an unknown GSO type, or a
    /// frame that fills all of `buf`, is an error of kind `InvalidData`: a
    /// drop, not a reason to stop reading.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(VnetHdr, usize)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_once(fd.get_ref(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one plain frame (complete checksums, at most MTU + 14 bytes)
    /// without waiting: a full queue or a down link is an error the caller
    /// counts as a drop. In vnet mode it goes out behind [`VnetHdr::NONE`].
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        self.try_send_offload(&VnetHdr::NONE, frame)
    }

    /// Writes one frame described by `hdr` (a super-frame, or a partial
    /// checksum) without waiting, and returns the frame bytes written.
    ///
    /// A plain TAP can take only a finished frame: a `hdr` with a GSO type or
    /// `NEEDS_CSUM` is an `Unsupported` error there, and the caller must
    /// segment (and complete checksums) first.
    pub fn try_send_offload(&self, hdr: &VnetHdr, frame: &[u8]) -> io::Result<usize> {
        match self.fd.get_ref() {
            Dev::Plain(iface) => {
                if hdr.gso_type != 0 || hdr.needs_csum() {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "a TAP without vnet headers takes no super-frame or partial checksum",
                    ));
                }
                iface.send(frame)
            }
            Dev::Vnet(file) => {
                let hdr = hdr.to_bytes();
                let n = (&*file).write_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame)])?;
                Ok(n.saturating_sub(VnetHdr::LEN))
            }
        }
    }
}

impl Tap {
    /// Writes a frame with its offload metadata: whole, with `hdr`, where
    /// this TAP takes vnet headers and the segments fit `mtu`; otherwise
    /// finished and cut here ([`offload::deliver`]). Returns the frames to
    /// count as dropped and why (a failed write, or a frame that can't be
    /// cut, which is never partly written); `Err` when the TAP is gone.
    // HOT PATH
    pub fn deliver(
        &self,
        hdr: &VnetHdr,
        frame: &[u8],
        mtu: usize,
        seg_buf: &mut Vec<u8>,
    ) -> Result<Option<(DropReason, u64)>, IoError> {
        let (mut gone, mut failed) = (false, 0);
        let result =
            offload::deliver(
                hdr,
                frame,
                self.offload(),
                mtu,
                seg_buf,
                &mut |h, f| match self.try_send_offload(h, f) {
                    Ok(_) => {}
                    Err(e) if is_gone(&e) => gone = true,
                    Err(_) => failed += 1,
                },
            );
        if gone {
            return Err(self.gone_error());
        }
        Ok(match result {
            Err(e) => {
                debug!("cannot pass on a {}-byte frame: {e}", frame.len());
                Some((e.drop_reason(), 1))
            }
            Ok(_) if failed > 0 => Some((DropReason::SendFailed, failed)),
            Ok(_) => None,
        })
    }
}

/// Opens `/dev/net/tun` as the TAP `name` with a vnet header and offloads.
fn open_vnet(name: &str) -> Result<(Dev, String), IoError> {
    // std opens with O_CLOEXEC.
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| open_error("cannot create TAP", name, e))?;
    let fd = file.as_raw_fd();

    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // `check_ifname` guarantees at most 15 bytes, so a NUL stays at the end.
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: `fd` is open and `ifr` is a valid ifreq the kernel may write.
    unsafe { ioctl::tun_set_iff(fd, &mut ifr) }
        .map_err(|e| open_error("cannot create TAP", name, e.into()))?;
    let len = ifr.ifr_name.iter().position(|&c| c == 0).unwrap_or(0);
    let bytes: Vec<u8> = ifr.ifr_name[..len].iter().map(|&c| c as u8).collect();
    let name = String::from_utf8_lossy(&bytes).into_owned();

    let hdr_len = VnetHdr::LEN as libc::c_int;
    // SAFETY: `fd` is open and `hdr_len` is a live c_int.
    unsafe { ioctl::tun_set_vnet_hdr_sz(fd, &hdr_len) }
        .map_err(|e| open_error("cannot set the vnet header size on TAP", &name, e.into()))?;

    // SAFETY (both calls): `fd` is open; the argument is a plain flag word.
    let uso = match unsafe { ioctl::tun_set_offload(fd, (OFFLOADS | OFFLOADS_USO) as libc::c_int) }
    {
        Ok(_) => true,
        Err(nix::errno::Errno::EINVAL) => {
            unsafe { ioctl::tun_set_offload(fd, OFFLOADS as libc::c_int) }
                .map_err(|e| open_error("cannot set offloads on TAP", &name, e.into()))?;
            false
        }
        Err(e) => return Err(open_error("cannot set offloads on TAP", &name, e.into())),
    };
    tracing::debug!(tap = %name, uso, "TAP opened with vnet headers");
    Ok((Dev::Vnet(file), name))
}

/// One read attempt (see [`Tap::recv`]).
fn recv_once(dev: &Dev, buf: &mut [u8]) -> io::Result<(VnetHdr, usize)> {
    let file = match dev {
        Dev::Plain(iface) => return Ok((VnetHdr::NONE, iface.recv(buf)?)),
        Dev::Vnet(file) => file,
    };
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut hdr = [0u8; VnetHdr::LEN];
    let buf_len = buf.len();
    let n = (&*file).read_vectored(&mut [IoSliceMut::new(&mut hdr), IoSliceMut::new(buf)])?;
    let Some(len) = n.checked_sub(VnetHdr::LEN) else {
        return Err(bad(format!(
            "TAP read of {n} bytes is shorter than a vnet header"
        )));
    };
    // The kernel truncates silently and returns what fit (see the module
    // docs): a full buffer may hold the head of a longer frame.
    if len >= buf_len {
        return Err(bad(format!(
            "TAP frame filled the whole {buf_len}-byte buffer, so may be truncated"
        )));
    }
    let hdr = VnetHdr::parse(&hdr).map_err(|e| bad(format!("bad vnet header from TAP: {e}")))?;
    hdr.gso()
        .map_err(|e| bad(format!("bad vnet header from TAP: {e}")))?;
    Ok((hdr, len))
}

/// True when a TAP read or write failed because the device no longer exists
/// (deleted, or its network namespace was removed): the fd stays open but is
/// detached (`EBADFD`), and nothing will ever come through it again.
pub fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADFD) | Some(libc::ENODEV))
}

impl Tap {
    /// The error that ends a driver whose TAP is gone (see [`is_gone`]).
    pub fn gone_error(&self) -> IoError {
        IoError::new(
            "lost TAP",
            &self.name,
            io::Error::other("it was deleted, or its network namespace was removed"),
        )
    }
}

/// Sets `O_NONBLOCK` on a file descriptor.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // SAFETY: the caller owns `fd` for the duration of this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
