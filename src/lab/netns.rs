//! Namespace plumbing: fork-free creation and deletion, running code inside a
//! namespace on a dedicated thread, and netlink requests made from there.
//!
//! Invariants:
//! - `setns`/`unshare` only ever happen on a thread spawned here for that one
//!   purpose; the thread ends when the job ends, so no pooled thread (tokio
//!   worker, `spawn_blocking`) is ever left in a foreign namespace.
//! - A namespace is named by a bind mount on `/run/netns/NAME`, exactly like
//!   `ip netns add`, so `ip netns exec NAME ...` works while a lab runs.

use std::{
    fs::{self, File, OpenOptions},
    future::Future,
    net::IpAddr,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::OnceLock,
    thread,
};

use crate::core::mac::MacAddr;
use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use nix::{
    errno::Errno,
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressFlags},
        link::{LinkAttribute, LinkFlags, LinkMessage},
    },
    Handle, LinkUnspec,
};

/// Where named network namespaces live (same as iproute2).
pub const NETNS_DIR: &str = "/run/netns";

/// Makes `/run/netns` exist and be a shared mount point, as `ip netns add`
/// does, so bind mounts below it propagate to other mount namespaces. Done
/// once per process.
fn prepare_netns_dir() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = Path::new(NETNS_DIR);
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {NETNS_DIR}: {e}"))?;
        let shared = || {
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        match shared() {
            Ok(()) => Ok(()),
            Err(Errno::EINVAL) => {
                // Not a mount point yet: bind it onto itself first.
                mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| format!("bind mount {NETNS_DIR}: {e}"))?;
                shared().map_err(|e| format!("make {NETNS_DIR} shared: {e}"))
            }
            Err(e) => Err(format!("make {NETNS_DIR} shared: {e}")),
        }
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Creates the named namespace `/run/netns/<name>` without forking and brings
/// its loopback up. Returns the path of the namespace file.
pub fn create(name: &str) -> Result<PathBuf> {
    prepare_netns_dir()?;
    let path = Path::new(NETNS_DIR).join(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let result = thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind mount netns onto {}", path.display()))?;
            block_on_netlink(|h| async move {
                let lo = find_link(&h, "lo").await?.context("no lo")?;
                set_up(&h, lo.header.index, true).await
            })
            .context("bring lo up")
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if let Err(e) = result {
        delete(&path);
        return Err(e.context(format!("create namespace {name}")));
    }
    Ok(path)
}

/// Deletes namespaces left by earlier runs that died without cleaning up
/// (killed processes): every name under [`NETNS_DIR`] for which `owner`
/// returns a pid that is no longer alive. Names for which `owner` returns
/// `None` are never touched.
pub fn sweep_stale(owner: impl Fn(&str) -> Option<u32>) {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner(&name) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete(&e.path());
        }
    }
}

/// Deletes a namespace created by [`create`]: lazy unmount, then remove the
/// file. Errors are ignored (it is cleanup); the kernel frees the namespace
/// once no process, thread or open fd holds it any more.
pub fn delete(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = fs::remove_file(path);
}

/// Runs `f` on a fresh thread that has entered the namespace at `path`, and
/// returns its result. The thread ends with the job.
pub fn in_ns<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let ns = File::open(path).with_context(|| format!("open {}", path.display()))?;
    thread::scope(|s| {
        s.spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
            drop(ns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs the async netlink job `f` inside the namespace at `path`: a fresh
/// thread `setns`'s there, builds a current-thread tokio runtime and opens a
/// netlink connection, whose handle `f` receives.
pub fn netlink<T, F, Fut>(path: &Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    in_ns(path, || block_on_netlink(f))
}

/// Runs `f` with a netlink handle in the calling thread's namespace.
pub fn block_on_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build tokio runtime")?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// The link called `name`, if it exists in the handle's namespace.
pub async fn find_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    // A full dump avoids guessing which errno "no such link" comes back as;
    // lab namespaces hold a handful of links.
    let mut links = h.link().get().execute();
    while let Some(msg) = links.try_next().await.context("dump links")? {
        if link_name(&msg) == Some(name) {
            return Ok(Some(msg));
        }
    }
    Ok(None)
}

/// Like [`find_link`], but a missing link is an error.
pub async fn get_link(h: &Handle, name: &str) -> Result<LinkMessage> {
    find_link(h, name)
        .await?
        .with_context(|| format!("no link named {name}"))
}

/// The `IFLA_IFNAME` of a link message.
pub fn link_name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The hardware address of a link message, if it is 6 bytes long.
pub fn link_mac(msg: &LinkMessage) -> Option<MacAddr> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => MacAddr::from_slice(b).filter(|_| b.len() == 6),
        _ => None,
    })
}

/// The MTU of a link message.
pub fn link_mtu(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// Whether the link is administratively up.
pub fn link_is_up(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Up)
}

/// Sets a link up or down.
pub async fn set_up(h: &Handle, index: u32, up: bool) -> Result<()> {
    let b = LinkUnspec::new_with_index(index);
    let b = if up { b.up() } else { b.down() };
    h.link()
        .set(b.build())
        .execute()
        .await
        .context(if up { "link up" } else { "link down" })
}

/// Adds `addr` (`"10.0.0.2/24"`, `"fd00::2/64"`; no prefix means a host
/// address) to the link with `index`. IPv6 addresses skip duplicate address
/// detection (`nodad`), so they are usable at once instead of after ~1 s.
pub async fn add_addr(h: &Handle, index: u32, addr: &str) -> Result<()> {
    let (ip, prefix) = parse_cidr(addr)?;
    let mut req = h.address().add(index, ip, prefix);
    if ip.is_ipv6() {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute()
        .await
        .with_context(|| format!("add address {addr}"))
}

/// Parses `"10.0.0.2/24"` into the address and prefix length.
pub fn parse_cidr(addr: &str) -> Result<(IpAddr, u8)> {
    let (ip, prefix) = match addr.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (addr, None),
    };
    let ip: IpAddr = ip.parse().with_context(|| format!("bad address {addr}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .with_context(|| format!("bad prefix in {addr}"))?,
        None => max,
    };
    Ok((ip, prefix))
}

/// Writes a sysctl under `/proc/sys` (`key` like `net/ipv4/ip_forward` or
/// `net.ipv4.ip_forward`) from the calling thread. `/proc/sys/net` shows the
/// namespace of the thread that opens it, so call this inside [`in_ns`].
pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    fs::write(&path, value).with_context(|| format!("write {} = {value}", path.display()))
}

/// Checks that `name` is a valid Linux interface name (1 to 15 bytes, no
/// `/`, whitespace or `:`).
pub fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ':', ' ', '\t', '\n']) {
        bail!("invalid interface name {name:?} (at most 15 bytes, no '/', ':' or spaces)");
    }
    Ok(())
}
