//! A TAP device, opened through tun-tap and driven by tokio.
//!
//! The device lives as long as this value. Its file descriptor keeps working
//! if someone moves the interface into another network namespace.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
};

use tokio::io::unix::AsyncFd;
use tun_tap::{Iface, Mode};

use crate::io::{check_ifname, plain, IoError};

/// A TAP device (Ethernet frames, no packet-info prefix).
pub struct Tap {
    fd: AsyncFd<FdIface>,
    name: String,
}

/// `Iface` with the `AsRawFd` that `AsyncFd` needs.
struct FdIface(Iface);

impl AsRawFd for FdIface {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Tap {
    /// Creates (or attaches to) the TAP `name`. Must run inside a tokio runtime.
    pub fn open(name: &str) -> Result<Tap, IoError> {
        check_ifname(name)?;
        let iface = Iface::without_packet_info(name, Mode::Tap).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => " (lanbridge needs root or CAP_NET_ADMIN)",
                Some(libc::EBUSY) => " (the device is in use by another process)",
                Some(libc::ENOENT) => " (is the tun module loaded? /dev/net/tun is missing)",
                _ => "",
            };
            IoError::new(
                "cannot create TAP",
                name,
                io::Error::new(e.kind(), format!("{}{hint}", plain(&e))),
            )
        })?;
        set_nonblocking(iface.as_raw_fd())
            .map_err(|e| IoError::new("cannot set non-blocking on TAP", name, e))?;
        let name = iface.name().to_string();
        // SAFETY: the fd belongs to `iface`, which the AsyncFd owns until drop.
        let fd = unsafe { AsyncFd::register(FdIface(iface)) }
            .map_err(|e| IoError::new("cannot register TAP with tokio", &name, e.into()))?;
        Ok(Tap { fd, name })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame; `buf` must hold the largest frame (MTU + 14 or more).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.recv(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one frame without waiting: a full queue or a down link is an
    /// error the caller counts as a drop.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        self.fd.get_ref().0.send(frame)
    }
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
