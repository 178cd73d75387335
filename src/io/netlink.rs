//! Link and address configuration over rtnetlink.
//!
//! Each call opens its own netlink connection in the caller's network
//! namespace; these are start-up and slow-path operations.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkMessage},
    },
    Handle, LinkUnspec, RouteMessageBuilder,
};

use crate::{
    core::{mac::MacAddr, nat::Prefix},
    io::IoError,
};

/// Converts a netlink error into an `io::Error` with the kernel's errno.
fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// A netlink connection in the current namespace.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Connects; must run inside a tokio runtime.
    pub fn connect() -> Result<Netlink, IoError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| IoError::new("cannot open netlink socket", "route", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    async fn link(&self, name: &str) -> Result<LinkMessage, IoError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(no_such_interface(name)),
            Err(e) => {
                let e = to_io(e);
                if e.raw_os_error() == Some(libc::ENODEV) {
                    Err(no_such_interface(name))
                } else {
                    Err(IoError::new("cannot query interface", name, e))
                }
            }
        }
    }

    /// The interface index of `name`.
    pub async fn index(&self, name: &str) -> Result<u32, IoError> {
        Ok(self.link(name).await?.header.index)
    }

    /// The MAC address and MTU of `name`.
    pub async fn mac_and_mtu(&self, name: &str) -> Result<(MacAddr, u32), IoError> {
        let link = self.link(name).await?;
        let mut mac = None;
        let mut mtu = 1500;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::Address(bytes) => mac = MacAddr::from_slice(bytes),
                LinkAttribute::Mtu(m) => mtu = *m,
                _ => {}
            }
        }
        let mac = mac.ok_or_else(|| {
            IoError::new(
                "interface has no Ethernet address",
                name,
                io::Error::from(io::ErrorKind::Unsupported),
            )
        })?;
        Ok((mac, mtu))
    }

    /// Sets MAC and MTU (when given), then brings the link up.
    pub async fn configure(
        &self,
        index: u32,
        name: &str,
        mac: Option<MacAddr>,
        mtu: Option<u32>,
    ) -> Result<(), IoError> {
        let mut msg = LinkUnspec::new_with_index(index);
        if let Some(mac) = mac {
            msg = msg.address(mac.0.to_vec());
        }
        if let Some(mtu) = mtu {
            msg = msg.mtu(mtu);
        }
        self.handle
            .link()
            .set(msg.up().build())
            .execute()
            .await
            .map_err(|e| IoError::new("cannot configure interface", name, to_io(e)))
    }

    /// Adds `addr/prefix` to the link.
    pub async fn add_address(
        &self,
        index: u32,
        name: &str,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<(), IoError> {
        self.handle
            .address()
            .add(index, addr, prefix)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                IoError::new(
                    "cannot add address to",
                    format!("{name} ({addr}/{prefix})"),
                    to_io(e),
                )
            })
    }

    /// Deletes the link `name`; true if there was one.
    pub async fn delete_link(&self, name: &str) -> Result<bool, IoError> {
        let index = match self.link(name).await {
            Ok(link) => link.header.index,
            Err(e) if e.error.raw_os_error() == Some(libc::ENODEV) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| IoError::new("cannot delete interface", name, to_io(e)))?;
        Ok(true)
    }

    /// Adds (`add`) or removes a host route (`/32`, `/128`) to `dst` through
    /// the link `index`, with preferred source `src` (same family).
    pub async fn host_route(
        &self,
        add: bool,
        index: u32,
        name: &str,
        dst: IpAddr,
        src: IpAddr,
    ) -> Result<(), IoError> {
        let msg = match (dst, src) {
            (IpAddr::V4(d), IpAddr::V4(s)) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d, 32)
                .pref_source(s)
                .output_interface(index)
                .build(),
            (IpAddr::V6(d), IpAddr::V6(s)) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d, 128)
                .pref_source(s)
                .output_interface(index)
                .build(),
            _ => {
                return Err(IoError::new(
                    "route and source differ in family:",
                    format!("{dst} src {src}"),
                    io::Error::from(io::ErrorKind::InvalidInput),
                ))
            }
        };
        let routes = self.handle.route();
        let result = if add {
            // Exclusive: a route to that address that someone else made
            // (a VPN server exception, a container's) is never replaced.
            routes.add(msg).execute().await
        } else {
            routes.del(msg).execute().await
        };
        result.map_err(|e| {
            IoError::new(
                if add {
                    "cannot add route via"
                } else {
                    "cannot remove route via"
                },
                format!("{name} ({dst} src {src})"),
                to_io(e),
            )
        })
    }

    /// Every address on the link with index `index`, with its prefix length.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Prefix>, IoError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(msg)) => {
                    out.extend(address_of(&msg).map(|ip| Prefix::new(ip, msg.header.prefix_len)))
                }
                Ok(None) => return Ok(out),
                Err(e) => {
                    return Err(IoError::new(
                        "cannot list addresses of",
                        format!("ifindex {index}"),
                        to_io(e),
                    ))
                }
            }
        }
    }
}

/// The interface address of a message: `Local` for IPv4 (the peer address of
/// point-to-point links is `Address`), else `Address`.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    address
}

fn no_such_interface(name: &str) -> IoError {
    IoError::new(
        "no such interface:",
        name,
        io::Error::from_raw_os_error(libc::ENODEV),
    )
}
