//! Network labs on one machine: named network namespaces, veth pairs and
//! kernel bridges acting as switches, built over rtnetlink without forking,
//! with real programs running inside them; everything is torn down when the
//! [`Lab`] is dropped or closed. `lanbridge demo` builds its topology with
//! it, and so does the namespace test harness (`netns-tests/harness`), which
//! adds its test policy (skip without root, unique names per test) and
//! packet captures on top.
//!
//! Invariants:
//! - Every namespace is named `{prefix}-{short}`; the creator picks a prefix
//!   that no other lab uses (the tests `lb{pid}x{n}`, the demo
//!   `lbdemo-{pid}`). No link is ever created in the root namespace: veth
//!   pairs are created with both ends directly in their target namespaces,
//!   so short link names such as `eth0` are fine.
//! - Teardown order: stop children (SIGTERM, grace, SIGKILL, reap), then
//!   unmount and remove every namespace file. A namespace lives on while a
//!   process holds it, so children go first. Teardown runs once, from drop
//!   or from [`LabCloser::close`] (e.g. a signal handler thread); once it has
//!   begun, nothing new can be spawned or created in the lab.
//! - Namespace membership is per thread: code that must run inside a
//!   namespace runs on a thread spawned for that one job (see [`netns`]).
//!
//! Debugging a running lab: `ip netns list`, `ip netns exec PREFIX-relay ip a`.

pub mod netns;
pub mod proc;

use std::{
    fmt,
    fs::File,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::core::mac::MacAddr;
use anyhow::{bail, ensure, Context, Result};
use nix::sched::{setns, CloneFlags};
use rtnetlink::{
    packet_route::link::{InfoData, InfoVeth},
    LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
};

pub use self::proc::Proc;

/// Default timeout of [`Ns::run`].
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`wait_until`] polls.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL_EVERY`] until it holds (true) or `timeout`
/// passes (false). `cond` is checked at least once, and once more at the
/// deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(POLL_EVERY.min(deadline - now));
    }
}

struct LabShared {
    prefix: String,
    dir: PathBuf,
    namespaces: Mutex<Vec<PathBuf>>,
    /// Long-running children, and `run` children while they run.
    procs: Mutex<Vec<Proc>>,
    files: AtomicU32,
    /// Set when teardown begins; checked under the `procs` or `namespaces`
    /// lock before anything new is added.
    closed: AtomicBool,
    /// Held for the whole teardown, so a second caller returns only once the
    /// first has finished.
    teardown: Mutex<()>,
    keep_files: AtomicBool,
    parent_death_signal: AtomicBool,
}

impl LabShared {
    /// A fresh path in the lab directory: `{n}-{stem}`.
    fn file(&self, stem: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{n:03}-{stem}"))
    }

    fn check_open(&self) -> Result<()> {
        ensure!(
            !self.closed.load(Ordering::SeqCst),
            "lab {} is being torn down",
            self.prefix
        );
        Ok(())
    }

    /// Registers a process; if teardown has begun, kills it instead.
    fn add_proc(&self, p: &Proc) -> Result<()> {
        let mut procs = self.procs.lock().unwrap();
        if self.closed.load(Ordering::SeqCst) {
            drop(procs);
            p.terminate(Duration::ZERO);
            bail!("lab {} is being torn down", self.prefix);
        }
        procs.push(p.clone());
        Ok(())
    }

    fn remove_proc(&self, p: &Proc) {
        self.procs
            .lock()
            .unwrap()
            .retain(|q| !Arc::ptr_eq(&q.0, &p.0));
    }

    /// Stops every child, deletes every namespace, removes the directory
    /// (unless told to keep it). Runs once; later calls wait for the first.
    fn teardown(&self) {
        let _guard = self.teardown.lock().unwrap_or_else(|e| e.into_inner());
        // Under both locks, so nothing is added after the lists are taken.
        let procs = {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            let _ns = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.swap(true, Ordering::SeqCst) {
                return;
            }
            std::mem::take(&mut *procs)
        };
        // SIGTERM everyone first so the grace periods overlap.
        for p in &procs {
            let _ = p.signal(nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + proc::STOP_GRACE;
        for p in &procs {
            p.wait_timeout(deadline.saturating_duration_since(Instant::now()));
            p.terminate(Duration::ZERO);
        }
        let namespaces =
            std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|e| e.into_inner()));
        for path in namespaces.iter().rev() {
            netns::delete(path);
        }
        if !self.keep_files.load(Ordering::SeqCst) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A topology of namespaces and the processes running in them. Everything
/// it made is torn down on drop.
pub struct Lab {
    shared: Arc<LabShared>,
    started: Instant,
}

/// Tears a [`Lab`] down from elsewhere, e.g. a signal-handling thread; see
/// [`Lab::closer`].
#[derive(Clone)]
pub struct LabCloser(Arc<LabShared>);

impl LabCloser {
    /// Tears the lab down now: stops its processes, deletes its namespaces
    /// and its directory. Returns once that is done (also when another
    /// thread is doing it); the [`Lab`] is unusable afterwards.
    pub fn close(&self) {
        self.0.teardown();
    }
}

impl Lab {
    /// Starts a lab whose namespaces are named `{prefix}-{short}` and whose
    /// logs and scratch files go to `dir` (created, mode 0700). The caller
    /// makes sure no other lab uses `prefix`.
    pub fn create(prefix: &str, dir: &Path) -> Result<Lab> {
        ensure!(
            !prefix.is_empty() && !prefix.contains('/'),
            "bad lab prefix {prefix:?}"
        );
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.display()))?;
        Ok(Lab {
            shared: Arc::new(LabShared {
                prefix: prefix.to_string(),
                dir: dir.to_path_buf(),
                namespaces: Mutex::new(Vec::new()),
                procs: Mutex::new(Vec::new()),
                files: AtomicU32::new(0),
                closed: AtomicBool::new(false),
                teardown: Mutex::new(()),
                keep_files: AtomicBool::new(false),
                parent_death_signal: AtomicBool::new(false),
            }),
            started: Instant::now(),
        })
    }

    /// A handle that can tear this lab down from another thread.
    pub fn closer(&self) -> LabCloser {
        LabCloser(self.shared.clone())
    }

    /// Keep the lab directory (logs) at teardown instead of removing it.
    pub fn keep_files(&self, keep: bool) {
        self.shared.keep_files.store(keep, Ordering::SeqCst);
    }

    /// Children spawned from now on get SIGTERM when the thread that spawned
    /// them ends (`PR_SET_PDEATHSIG`), so they cannot outlive a lab owner
    /// that is killed with SIGKILL. Only for owners that spawn from a thread
    /// that lives as long as the lab (the demo's main thread).
    pub fn parent_death_signal(&self, on: bool) {
        self.shared.parent_death_signal.store(on, Ordering::SeqCst);
    }

    /// The unique prefix of this lab's namespace names (`lb{pid}x{n}`).
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// Directory for logs and scratch files; removed at teardown unless
    /// [`Lab::keep_files`] was set.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Time since [`Lab::create`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The processes spawned so far that are still registered (all the
    /// [`Ns::spawn`] ones until teardown).
    pub fn procs(&self) -> Vec<Proc> {
        self.shared.procs.lock().unwrap().clone()
    }

    /// The logs of every process spawned so far, each under a header line.
    pub fn logs(&self) -> String {
        let procs = self.shared.procs.lock().unwrap();
        procs
            .iter()
            .map(|p| format!("----- {} (pid {}) -----\n{}\n", p.label(), p.pid(), p.log()))
            .collect()
    }

    /// Full names of the namespaces made so far.
    pub fn namespace_names(&self) -> Vec<String> {
        let ns = self.shared.namespaces.lock().unwrap();
        ns.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Creates the namespace `{prefix}-{short}` with `lo` up. Panics on
    /// failure (e.g. `short` used twice in one lab).
    pub fn ns(&self, short: &str) -> Ns {
        self.try_ns(short).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Lab::ns`], returning errors.
    pub fn try_ns(&self, short: &str) -> Result<Ns> {
        ensure!(
            !short.is_empty() && !short.contains('/'),
            "bad namespace name {short:?}"
        );
        let name = format!("{}-{short}", self.shared.prefix);
        // Under the lock, so a concurrent teardown either sees it or has
        // already begun (and then it is never created).
        let mut namespaces = self.shared.namespaces.lock().unwrap();
        self.shared.check_open()?;
        let path = netns::create(&name)?;
        namespaces.push(path.clone());
        drop(namespaces);
        Ok(Ns {
            name,
            short: short.to_string(),
            path,
            lab: self.shared.clone(),
        })
    }

    /// Creates a switch: a kernel bridge `br0` in its own namespace (named
    /// like [`Lab::ns`]). IPv6 is off in that namespace and multicast
    /// snooping off on the bridge, so it is a dumb switch that floods and
    /// sends nothing of its own. Panics on failure.
    pub fn switch(&self, short: &str) -> Switch {
        self.try_switch(short).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Lab::switch`], returning errors.
    pub fn try_switch(&self, short: &str) -> Result<Switch> {
        let ns = self.try_ns(short)?;
        let index = netns::netlink(&ns.path, |h| async move {
            netns::write_sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
            netns::write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
            let br = LinkBridge::new(Switch::BRIDGE)
                .mcast_snooping(false)
                .up()
                .build();
            h.link().add(br).execute().await.context("create bridge")?;
            Ok(netns::get_link(&h, Switch::BRIDGE).await?.header.index)
        })
        .with_context(|| format!("switch {short}"))?;
        Ok(Switch {
            ns,
            index,
            ports: Arc::new(AtomicU32::new(0)),
        })
    }

    /// Plugs `ns` into `switch`: a veth whose end `ifname` is in `ns` (up,
    /// with `addr` if given, e.g. `"10.0.0.2/24"`) and whose other end is a
    /// port of the switch's bridge (up).
    pub fn plug(&self, ns: &Ns, ifname: &str, switch: &Switch, addr: Option<&str>) -> Result<Link> {
        let mut opts = LinkOpts::new();
        if let Some(a) = addr {
            opts = opts.addr(a);
        }
        self.plug_with(ns, ifname, switch, opts)
    }

    /// [`Lab::plug`] with full options (addresses, MAC, MTU; the MTU is set on
    /// both ends of the veth).
    pub fn plug_with(
        &self,
        ns: &Ns,
        ifname: &str,
        switch: &Switch,
        opts: LinkOpts,
    ) -> Result<Link> {
        netns::check_ifname(ifname)?;
        let k = switch.ports.fetch_add(1, Ordering::Relaxed);
        let mut port = format!("p{k}-{}", ns.short);
        port.truncate(15);
        let target = File::open(&ns.path).with_context(|| format!("open {}", ns.path.display()))?;
        let (br, mtu) = (switch.index, opts.mtu);
        let peer = peer_message(ifname, &opts, &target);
        let port2 = port.clone();
        netns::netlink(&switch.ns.path, |h| async move {
            let mut b = LinkVeth::new(&port2, ifname)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .controller(br)
                .up();
            if let Some(m) = mtu {
                b = b.mtu(m);
            }
            h.link()
                .add(b.build())
                .execute()
                .await
                .context("create veth")
        })
        .with_context(|| format!("plug {}:{ifname} into {}", ns.name, switch.ns.name))?;
        drop(target);
        let mut link = ns.configure(ifname, &opts)?;
        link.peer = port;
        Ok(link)
    }

    /// A veth pair straight from `a` (end `ifa`) to `b` (end `ifb`), both up,
    /// each with its address if given.
    pub fn veth(
        &self,
        a: &Ns,
        ifa: &str,
        addr_a: Option<&str>,
        b: &Ns,
        ifb: &str,
        addr_b: Option<&str>,
    ) -> Result<(Link, Link)> {
        let opts = |addr: Option<&str>| match addr {
            Some(x) => LinkOpts::new().addr(x),
            None => LinkOpts::new(),
        };
        self.veth_with(a, ifa, opts(addr_a), b, ifb, opts(addr_b))
    }

    /// [`Lab::veth`] with full options per end.
    pub fn veth_with(
        &self,
        a: &Ns,
        ifa: &str,
        opts_a: LinkOpts,
        b: &Ns,
        ifb: &str,
        opts_b: LinkOpts,
    ) -> Result<(Link, Link)> {
        netns::check_ifname(ifa)?;
        netns::check_ifname(ifb)?;
        let target = File::open(&b.path).with_context(|| format!("open {}", b.path.display()))?;
        let peer = peer_message(ifb, &opts_b, &target);
        let (mac_a, mtu_a) = (opts_a.mac, opts_a.mtu);
        netns::netlink(&a.path, |h| async move {
            let mut m = LinkVeth::new(ifa, ifb)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .up();
            if let Some(mac) = mac_a {
                m = m.address(mac.0.to_vec());
            }
            if let Some(mtu) = mtu_a {
                m = m.mtu(mtu);
            }
            h.link()
                .add(m.build())
                .execute()
                .await
                .context("create veth")
        })
        .with_context(|| format!("veth {}:{ifa} <-> {}:{ifb}", a.name, b.name))?;
        drop(target);
        let mut la = a.configure(ifa, &opts_a)?;
        let mut lb = b.configure(ifb, &opts_b)?;
        la.peer = ifb.to_string();
        lb.peer = ifa.to_string();
        Ok((la, lb))
    }
}

/// The veth peer part of a create request: named `ifname`, created directly
/// in the namespace open at `target`, with the MAC and MTU of `opts`. Not
/// `up`: the kernel configures the peer before the pair is linked, and
/// opening a veth without its peer fails with ENOTCONN. [`Ns::configure`]
/// brings it up.
fn peer_message(
    ifname: &str,
    opts: &LinkOpts,
    target: &File,
) -> rtnetlink::packet_route::link::LinkMessage {
    let mut b = LinkMessageBuilder::<LinkUnspec>::new()
        .name(ifname)
        .setns_by_fd(target.as_raw_fd());
    if let Some(mac) = opts.mac {
        b = b.address(mac.0.to_vec());
    }
    if let Some(mtu) = opts.mtu {
        b = b.mtu(mtu);
    }
    b.build()
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.shared.teardown();
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Options for one end of a veth made by [`Lab::plug_with`] / [`Lab::veth_with`].
#[derive(Clone, Debug, Default)]
pub struct LinkOpts {
    /// Addresses in CIDR form, e.g. `"10.0.0.2/24"`.
    pub addrs: Vec<String>,
    /// MAC address; the kernel picks a random one if `None`.
    pub mac: Option<MacAddr>,
    /// MTU; 1500 if `None`.
    pub mtu: Option<u32>,
}

impl LinkOpts {
    /// No address, random MAC, MTU 1500.
    pub fn new() -> LinkOpts {
        LinkOpts::default()
    }

    /// Adds an address (`"10.0.0.2/24"`, `"fd00::2/64"`).
    pub fn addr(mut self, cidr: &str) -> LinkOpts {
        self.addrs.push(cidr.to_string());
        self
    }

    /// Sets the MAC.
    pub fn mac(mut self, mac: MacAddr) -> LinkOpts {
        self.mac = Some(mac);
        self
    }

    /// Sets the MTU.
    pub fn mtu(mut self, mtu: u32) -> LinkOpts {
        self.mtu = Some(mtu);
        self
    }
}

/// A link the lab made, as seen inside its namespace right after setup.
#[derive(Clone, Debug)]
pub struct Link {
    /// Full name of the namespace the link is in.
    pub ns: String,
    /// Interface name (e.g. `eth0`).
    pub name: String,
    /// Interface index inside its namespace.
    pub index: u32,
    /// Its MAC.
    pub mac: MacAddr,
    /// Name of the other veth end (a switch port, or the peer interface).
    pub peer: String,
}

/// A kernel bridge in its own namespace, acting as a LAN switch.
#[derive(Clone)]
pub struct Switch {
    ns: Ns,
    index: u32,
    ports: Arc<AtomicU32>,
}

impl Switch {
    /// Name of the bridge inside the switch's namespace.
    pub const BRIDGE: &'static str = "br0";

    /// The namespace holding the bridge and its ports (capture on
    /// [`Switch::BRIDGE`] there to see every frame on the LAN).
    pub fn ns(&self) -> &Ns {
        &self.ns
    }

    /// Interface index of the bridge in [`Switch::ns`].
    pub fn bridge_index(&self) -> u32 {
        self.index
    }
}

/// A neighbour table entry (`ip neigh show to IP`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Link-layer address, absent e.g. while INCOMPLETE or FAILED.
    pub mac: Option<MacAddr>,
    /// Device it was learned on.
    pub dev: String,
    /// State as `ip` prints it: REACHABLE, STALE, FAILED, ...
    pub state: String,
}

/// A named network namespace of a [`Lab`]. Cheap to clone. Operations fail
/// (or panic, for the infallible-looking ones) once the lab is dropped.
#[derive(Clone)]
pub struct Ns {
    name: String,
    short: String,
    path: PathBuf,
    lab: Arc<LabShared>,
}

impl fmt::Debug for Ns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ns({})", self.name)
    }
}

impl Ns {
    /// Full name, as listed by `ip netns list`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The short name given to [`Lab::ns`].
    pub fn short(&self) -> &str {
        &self.short
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the netlink job `f` inside this namespace (on a fresh thread with
    /// its own current-thread runtime and netlink connection).
    pub fn netlink<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce(rtnetlink::Handle) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>>,
    {
        netns::netlink(&self.path, f)
    }

    /// Runs `f` on a fresh thread inside this namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        netns::in_ns(&self.path, f)
    }

    /// Brings `ifname` up, adds the addresses of `opts`, and describes it.
    fn configure(&self, ifname: &str, opts: &LinkOpts) -> Result<Link> {
        let addrs = opts.addrs.clone();
        let (index, mac) = self
            .netlink(|h| async move {
                let l = netns::get_link(&h, ifname).await?;
                let index = l.header.index;
                if !netns::link_is_up(&l) {
                    netns::set_up(&h, index, true).await?;
                }
                for a in &addrs {
                    netns::add_addr(&h, index, a).await?;
                }
                Ok((index, netns::link_mac(&l).context("link has no MAC")?))
            })
            .with_context(|| format!("configure {}:{ifname}", self.name))?;
        Ok(Link {
            ns: self.name.clone(),
            name: ifname.to_string(),
            index,
            mac,
            peer: String::new(),
        })
    }

    /// Whether a link called `ifname` exists here (netlink).
    pub fn has_link(&self, ifname: &str) -> bool {
        self.netlink(|h| async move { Ok(netns::find_link(&h, ifname).await?.is_some()) })
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }

    /// The MAC of `ifname`, `None` if there is no such link (netlink).
    pub fn link_mac(&self, ifname: &str) -> Option<MacAddr> {
        self.netlink(|h| async move {
            Ok(netns::find_link(&h, ifname)
                .await?
                .and_then(|l| netns::link_mac(&l)))
        })
        .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }

    /// The MTU of `ifname`, `None` if there is no such link (netlink).
    pub fn link_mtu(&self, ifname: &str) -> Option<u32> {
        self.netlink(|h| async move {
            Ok(netns::find_link(&h, ifname)
                .await?
                .and_then(|l| netns::link_mtu(&l)))
        })
        .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }

    /// Sets `ifname` up or down.
    pub fn set_link_up(&self, ifname: &str, up: bool) -> Result<()> {
        self.netlink(|h| async move {
            let l = netns::get_link(&h, ifname).await?;
            netns::set_up(&h, l.header.index, up).await
        })
    }

    /// Adds an address (`"10.0.0.2/24"`) to `ifname`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.netlink(|h| async move {
            let l = netns::get_link(&h, ifname).await?;
            netns::add_addr(&h, l.header.index, cidr).await
        })
    }

    /// Writes a sysctl in this namespace (`"net.ipv4.ip_forward"`, `"1"`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.enter(|| netns::write_sysctl(key, value))
    }

    /// A `Command` for `program` that runs inside this namespace (`setns` in
    /// the child before exec), with no signal blocked. Panics if the
    /// namespace is gone.
    pub fn cmd(&self, program: &str) -> Command {
        self.try_cmd(program).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Ns::cmd`], returning an error if the namespace is gone.
    pub fn try_cmd(&self, program: &str) -> Result<Command> {
        let ns =
            File::open(&self.path).with_context(|| format!("namespace {} is gone", self.name))?;
        let pdeathsig = self.lab.parent_death_signal.load(Ordering::SeqCst);
        let mut cmd = Command::new(program);
        // SAFETY: the closure only makes the setns, sigprocmask and prctl
        // syscalls (async-signal-safe) on an fd opened before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                // The mask survives exec: a lab owner that blocks SIGTERM to
                // take it with sigwait (the demo) must not pass that on.
                let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(empty.as_mut_ptr());
                if libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if pdeathsig && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// A fresh path in the lab directory, `{n}-{short}-{stem}`, for a log,
    /// capture or scratch file of this namespace.
    pub fn scratch_file(&self, stem: &str) -> PathBuf {
        self.lab.file(&format!("{}-{stem}", self.short))
    }

    /// Runs `program args...` here and returns its output; fails if it does
    /// not finish within `timeout` (it is then killed).
    pub fn try_run(&self, program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        self.lab.check_open()?;
        let mut cmd = self.try_cmd(program)?;
        cmd.args(args);
        let lab = &self.lab;
        let track = |p: &Proc, running: bool| {
            if running {
                // If teardown began, add_proc kills it and the wait ends.
                let _ = lab.add_proc(p);
            } else {
                lab.remove_proc(p);
            }
        };
        let base = self.scratch_file(program);
        proc::output_timeout(cmd, timeout, &base, &track)
    }

    /// Runs `program args...` here with a [`RUN_TIMEOUT`]; panics if it
    /// cannot be started or times out. The exit status is the caller's to check.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.try_run(program, args, RUN_TIMEOUT)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }

    /// Runs `ip args...` here; panics unless it succeeds. Returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = self.run("ip", args);
        assert!(
            out.status.success(),
            "{}: ip {} failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `program args...` here in the background, output to a log file
    /// in the lab directory. The lab stops it on drop.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Proc> {
        let mut cmd = self.try_cmd(program)?;
        cmd.args(args);
        self.spawn_cmd(cmd, program)
    }

    /// Starts a `Command` made by [`Ns::cmd`] (so it runs in this namespace)
    /// in the background, like [`Ns::spawn`]. `label` names the log file.
    pub fn spawn_cmd(&self, cmd: Command, label: &str) -> Result<Proc> {
        let label = format!("{label}@{}", self.short);
        let log = self.lab.file(&label).with_extension("log");
        self.lab.check_open()?;
        let p = Proc::spawn(cmd, &label, log)?;
        self.lab.add_proc(&p)?;
        Ok(p)
    }

    /// `ping -c COUNT` to `dst` (0.2 s apart, 1 s reply timeout); true if a
    /// reply came back.
    pub fn ping(&self, dst: &str, count: u32) -> bool {
        let c = count.max(1).to_string();
        self.ping_args(&["-n", "-q", "-c", &c, "-i", "0.2", "-W", "1", dst])
    }

    /// `ping` with the given arguments; true on exit status 0.
    pub fn ping_args(&self, args: &[&str]) -> bool {
        self.run("ping", args).status.success()
    }

    /// One ARP request for `dst` out of `iface` (`arping -c 1 -w 2 -I IFACE
    /// DST`); true if answered. The same arguments and exit status (0 iff a
    /// reply came) hold for iputils arping and for Thomas Habets' arping
    /// (Debian package `arping`, the one installed on the dev VM).
    pub fn arping(&self, iface: &str, dst: &str) -> bool {
        self.run("arping", &["-c", "1", "-w", "2", "-I", iface, dst])
            .status
            .success()
    }

    /// The neighbour table entry for `ip`, if any.
    pub fn neigh(&self, ip: &str) -> Option<Neighbour> {
        parse_neigh(&self.ip(&["neigh", "show", "to", ip]))
    }

    /// Like [`Ns::neigh`], returning errors instead of panicking.
    pub fn try_neigh(&self, ip: &str) -> Result<Option<Neighbour>> {
        let out = self.try_run("ip", &["neigh", "show", "to", ip], RUN_TIMEOUT)?;
        ensure!(
            out.status.success(),
            "{}: ip neigh show to {ip}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(parse_neigh(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Parses one line of `ip neigh show to IP`.
pub fn parse_neigh(out: &str) -> Option<Neighbour> {
    let line = out.lines().find(|l| !l.trim().is_empty())?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
    };
    Some(Neighbour {
        mac: after("lladdr").and_then(|m| m.parse().ok()),
        dev: after("dev").map(|d| d.to_string()).unwrap_or_default(),
        state: words.last().map(|s| s.to_string()).unwrap_or_default(),
    })
}
