//! The bridge's host access (README, "Host access"): a plain TAP in the
//! bridge host's own namespace with MAC `T` ([`crate::core::host::tap_mac`]), no IPv4
//! address, the NIC's IPv6 link-local addresses (so the host's neighbour
//! discovery on it speaks from an address the virtual hosts know as `N`),
//! and host routes to the virtual addresses the engine has learned. The
//! decisions (what is for the host, the MAC rewrites, the answers, which
//! routes) are the engine's ([`crate::core::nat`], [`crate::core::host`]);
//! this file only sets the device up and applies route changes.
//!
//! The TAP is not persistent: it and every route through it vanish when
//! the process ends, SIGKILL included.

use std::{net::IpAddr, time::Instant};

use tracing::{debug, info, warn};

use crate::{
    core::{
        drop::DropReason,
        host::{RouteChange, RouteSet},
        mac::MacAddr,
        nat::{Nat, Prefix},
        offload::VnetHdr,
    },
    io::{netlink::Netlink, tap::Tap, IoError},
};

/// The default name of the host TAP: `lbh-` and the NIC's name, cut to
/// the kernel's 15 characters.
pub fn default_name(iface: &str) -> String {
    let mut name = format!("lbh-{iface}");
    while name.len() > 15 {
        name.pop();
    }
    name
}

/// The host TAP and the routes through it.
pub struct HostAccess {
    tap: Tap,
    index: u32,
    routes: RouteSet,
    /// The engine's IP→MAC table version the routes were last made for.
    seen: Option<u64>,
    /// The route sources in use (IPv4, IPv6).
    sources: (Option<IpAddr>, Option<IpAddr>),
    warned_route: bool,
}

impl HostAccess {
    /// Creates the TAP `name` (removing a stale one left by a run that was
    /// killed oddly) with MAC `t` and MTU `mtu`, and gives it the NIC's
    /// link-local IPv6 addresses from `nic`.
    pub async fn open(
        netlink: &Netlink,
        name: &str,
        t: MacAddr,
        mtu: u32,
        nic: &[Prefix],
    ) -> anyhow::Result<HostAccess> {
        if netlink.delete_link(name).await? {
            warn!(
                tap = name,
                "removed a stale host-access device of that name (left by an earlier run?)"
            );
        }
        let tap = Tap::open(name, false)?;
        let name = tap.name().to_string();
        // No addresses of its own: no autoconfiguration, no duplicate address
        // detection or router solicitations into the overlay.
        for (key, value) in [
            ("addr_gen_mode", "1"),
            ("accept_dad", "0"),
            ("accept_ra", "0"),
            ("router_solicitations", "0"),
        ] {
            let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
            if let Err(e) = std::fs::write(&path, value) {
                warn!(tap = %name, "cannot set {path}: {e}");
            }
        }
        let index = netlink.index(&name).await?;
        netlink.configure(index, &name, Some(t), Some(mtu)).await?;
        let mut link_local = 0;
        for p in nic {
            if let IpAddr::V6(a) = p.addr() {
                if a.segments()[0] & 0xffc0 == 0xfe80 {
                    netlink.add_address(index, &name, p.addr(), 64).await?;
                    link_local += 1;
                }
            }
        }
        if link_local == 0 {
            warn!(tap = %name, "the NIC has no IPv6 link-local address: this host can't reach virtual hosts over IPv6");
        }
        info!(tap = %name, %t, "host access: this host reaches the virtual hosts through this TAP");
        Ok(HostAccess {
            tap,
            index,
            routes: RouteSet::default(),
            seen: None,
            sources: (None, None),
            warned_route: false,
        })
    }

    /// The TAP.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// Routes installed through the TAP.
    pub fn routes(&self) -> usize {
        self.routes.len()
    }

    /// Makes the host routes follow the engine's IP→MAC table, with the
    /// NIC's first routable address of each family (`nic`) as source. When
    /// the sources change, every route is made again.
    pub async fn sync_routes(&mut self, netlink: &Netlink, nat: &Nat, nic: &[Prefix]) {
        let version = nat.ip_table_changes();
        let routable = |v4: bool| {
            nic.iter().map(Prefix::addr).find(|a| {
                a.is_ipv4() == v4
                    && match a {
                        IpAddr::V4(a) => !a.is_link_local(),
                        IpAddr::V6(a) => a.segments()[0] & 0xffc0 != 0xfe80,
                    }
            })
        };
        let (src4, src6) = (routable(true), routable(false));
        let mut changes = Vec::new();
        if self.sources != (src4, src6) {
            // Routes made with the old source go first (routes are added
            // exclusively, so they would block the new ones).
            let (old4, old6) = self.sources;
            for change in self.routes.update(std::iter::empty()) {
                if let RouteChange::Remove(ip) = change {
                    changes.push((false, ip, if ip.is_ipv4() { old4 } else { old6 }));
                }
            }
            self.sources = (src4, src6);
        } else if self.seen == Some(version) {
            return;
        }
        self.seen = Some(version);
        for change in self.routes.update(nat.host_route_targets(Instant::now())) {
            let (add, ip) = match change {
                RouteChange::Add(ip) => (true, ip),
                RouteChange::Remove(ip) => (false, ip),
            };
            changes.push((add, ip, if ip.is_ipv4() { src4 } else { src6 }));
        }
        for (add, dst, src) in changes {
            let Some(src) = src else {
                continue;
            };
            let result = netlink
                .host_route(add, self.index, self.tap.name(), dst, src)
                .await;
            match result {
                Ok(()) => {
                    debug!(%dst, %src, tap = self.tap.name(), "host route {}", if add { "added" } else { "removed" })
                }
                // Gone already (the kernel drops routes whose source left).
                Err(e) if !add && e.error.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    if add {
                        // Not ours (EEXIST: someone else's route): never
                        // remove it as ours later.
                        self.routes.forget(dst);
                    }
                    if !self.warned_route {
                        self.warned_route = true;
                        warn!("{e} (further route errors are not logged)");
                    }
                }
            }
        }
    }

    /// Writes a frame for the host into the TAP, segmenting a super-frame;
    /// returns frames to count as dropped.
    // HOT PATH
    pub fn deliver(
        &self,
        hdr: &VnetHdr,
        frame: &[u8],
        mtu: usize,
        seg_buf: &mut Vec<u8>,
    ) -> Result<Option<(DropReason, u64)>, IoError> {
        self.tap.deliver(hdr, frame, mtu, seg_buf)
    }
}
