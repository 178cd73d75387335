//! UDP sockets with buffers sized for bursts.
//!
//! A GSO super-frame or a burst of full-size frames becomes dozens of
//! datagrams at once; the kernel's default receive buffer (about 200 KiB)
//! overflows and drops them (`RcvbufErrors` in /proc/net/snmp). Ask for a
//! few MiB; as root, past `net.core.rmem_max`.

use std::net::SocketAddr;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::UdpSocket;
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
