//! Network-namespace test harness: the library's [`lanbridge::lab`] (namespaces,
//! veth pairs, kernel-bridge switches, processes inside namespaces, teardown
//! on drop) with the test policy on top: a [`Lab`] per test, named uniquely
//! across parallel tests and test binaries, skipped without root (a failure
//! under `CI=true`), logs printed and files kept when the test panics; and
//! packet captures ([`Ns::capture`], [`pcap`]).
//!
//! Invariants:
//! - Every namespace is named `lb{pid}x{n}-{short}` (`n` from a process-wide
//!   counter), so labs in parallel tests and in parallel test binaries never
//!   collide; namespaces of dead test binaries are swept on the first
//!   [`Lab::new`].
//! - Everything else (drop order, per-thread namespace membership) is the
//!   library's; see `src/lab/mod.rs`.
//!
//! Debugging a running test: `ip netns list`, `ip netns exec lb...-relay ip a`.

#![allow(dead_code)]

pub mod netns;
pub mod pcap;

use std::{
    fmt,
    ops::Deref,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{bail, Result};

pub use self::pcap::Frame;
// The harness's API, whether or not a scenario uses each part today.
#[allow(unused_imports)]
pub use lanbridge::lab::{
    proc, tail, wait_until, Link, LinkOpts, Neighbour, Proc, POLL_EVERY, RUN_TIMEOUT,
};

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Path of the `lanbridge` binary under test (built by cargo for this test
/// target), for `ns.spawn(lanbridge_bin(), &[...])`.
pub fn lanbridge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lanbridge")
}

/// True when running as root (namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns false, after printing `skipped <test>: needs root (network
/// namespaces)`, when not running as root; panics instead under `CI=true`,
/// so a CI run cannot pass by skipping.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root (network namespaces), and CI=true forbids skipping");
    }
    eprintln!("skipped {test}: needs root (network namespaces)");
    false
}

/// One test's topology: a [`lanbridge::lab::Lab`] (whose methods it derefs
/// to) that hands out harness [`Ns`] and [`Switch`]. Everything it made is
/// torn down on drop; when the test panics, the processes' logs are printed
/// and the lab directory is kept.
pub struct Lab {
    inner: lanbridge::lab::Lab,
    test: String,
}

impl Deref for Lab {
    type Target = lanbridge::lab::Lab;

    fn deref(&self) -> &lanbridge::lab::Lab {
        &self.inner
    }
}

impl Lab {
    /// Starts a lab for the test `test`. Without root it prints
    /// `skipped <test>: needs root (network namespaces)` and returns `None`,
    /// except under `CI=true`, where it panics so a CI run cannot pass by
    /// skipping.
    pub fn new(test: &str) -> Option<Lab> {
        if !root_or_skip(test) {
            return None;
        }
        netns::sweep_stale();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("lb{}x{n}", std::process::id());
        let dir = std::env::temp_dir()
            .join("lanbridge-netns")
            .join(format!("{prefix}-{test}"));
        let inner = lanbridge::lab::Lab::create(&prefix, &dir).unwrap_or_else(|e| panic!("{e:#}"));
        Some(Lab {
            inner,
            test: test.to_string(),
        })
    }

    /// Creates the namespace `{prefix}-{short}` with `lo` up. Panics on
    /// failure (e.g. `short` used twice in one lab).
    pub fn ns(&self, short: &str) -> Ns {
        Ns(self.inner.ns(short))
    }

    /// Like [`Lab::ns`], returning errors.
    pub fn try_ns(&self, short: &str) -> Result<Ns> {
        self.inner.try_ns(short).map(Ns)
    }

    /// Creates a switch: a kernel bridge `br0` in its own namespace (see
    /// [`lanbridge::lab::Lab::switch`]). Panics on failure.
    pub fn switch(&self, short: &str) -> Switch {
        Switch::wrap(self.inner.switch(short))
    }

    /// Like [`Lab::switch`], returning errors.
    pub fn try_switch(&self, short: &str) -> Result<Switch> {
        self.inner.try_switch(short).map(Switch::wrap)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Runs before the inner lab's teardown, while the logs still exist.
        if std::thread::panicking() {
            for p in self.inner.procs() {
                eprintln!(
                    "----- {} (pid {}) log {} -----\n{}",
                    p.label(),
                    p.pid(),
                    p.log_path().display(),
                    tail(&p.log(), 80)
                );
            }
            self.inner.keep_files(true);
            eprintln!(
                "lab {} keeps its files in {}",
                self.test,
                self.inner.dir().display()
            );
        }
    }
}

/// A named network namespace of a [`Lab`]: a [`lanbridge::lab::Ns`] (whose
/// methods it derefs to) that can also capture packets. Cheap to clone.
#[derive(Clone)]
pub struct Ns(lanbridge::lab::Ns);

impl Deref for Ns {
    type Target = lanbridge::lab::Ns;

    fn deref(&self) -> &lanbridge::lab::Ns {
        &self.0
    }
}

impl fmt::Debug for Ns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Ns {
    /// Starts `tcpdump -w` on `iface` here and returns once it is capturing.
    pub fn capture(&self, iface: &str) -> Result<Capture> {
        self.capture_with(iface, 0, "")
    }

    /// [`Ns::capture`] keeping the first `snaplen` bytes of each frame (0:
    /// whole frames) of the frames that match the BPF expression `filter`
    /// (`""`: every frame), e.g. `"udp dst port 7171"`.
    pub fn capture_with(&self, iface: &str, snaplen: u32, filter: &str) -> Result<Capture> {
        let path = self.scratch_file(iface).with_extension("pcap");
        let file = path.to_string_lossy().into_owned();
        let snaplen = snaplen.to_string();
        // -U and --immediate-mode: hand each packet over and write it at once
        // (not when a TPACKET_V3 block retires), so the file is complete when
        // the test stops tcpdump.
        // -Z root: don't drop privileges before opening the file.
        let mut args = vec![
            "-i",
            iface,
            "-w",
            &file,
            "-U",
            "--immediate-mode",
            "-n",
            "-Z",
            "root",
            "-s",
            &snaplen,
        ];
        if !filter.is_empty() {
            args.push(filter);
        }
        let proc = self.spawn("tcpdump", &args)?;
        if !wait_until(Duration::from_secs(10), || {
            proc.log().contains("listening on") || !proc.is_running()
        }) {
            bail!(
                "tcpdump on {}:{iface} did not start:\n{}",
                self.name(),
                proc.log()
            );
        }
        if !proc.is_running() {
            bail!("tcpdump on {}:{iface} exited:\n{}", self.name(), proc.log());
        }
        Ok(Capture { proc, path })
    }
}

/// A kernel bridge in its own namespace, acting as a LAN switch (a
/// [`lanbridge::lab::Switch`] whose namespace is a harness [`Ns`]).
#[derive(Clone)]
pub struct Switch {
    inner: lanbridge::lab::Switch,
    ns: Ns,
}

impl Deref for Switch {
    type Target = lanbridge::lab::Switch;

    fn deref(&self) -> &lanbridge::lab::Switch {
        &self.inner
    }
}

impl Switch {
    /// Name of the bridge inside the switch's namespace.
    pub const BRIDGE: &'static str = lanbridge::lab::Switch::BRIDGE;

    fn wrap(inner: lanbridge::lab::Switch) -> Switch {
        let ns = Ns(inner.ns().clone());
        Switch { inner, ns }
    }

    /// The namespace holding the bridge and its ports (capture on
    /// [`Switch::BRIDGE`] there to see every frame on the LAN).
    pub fn ns(&self) -> &Ns {
        &self.ns
    }
}

/// A running `tcpdump -w` capture (see [`Ns::capture`]).
pub struct Capture {
    proc: Proc,
    path: PathBuf,
}

impl Capture {
    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The frames written so far (tcpdump runs with `-U`).
    pub fn frames(&self) -> Vec<Frame> {
        pcap::read(&self.path).unwrap_or_default()
    }

    /// Waits until the frames captured so far satisfy `pred`.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&[Frame]) -> bool) -> bool {
        wait_until(timeout, || pred(&self.frames()))
    }

    /// Stops tcpdump and returns every frame it captured. It first waits
    /// (at most 0.5 s) for the file to stop growing, so frames still in
    /// tcpdump's socket are not lost; use [`Capture::wait_for`] to wait for a
    /// specific frame.
    pub fn stop(self) -> Result<Vec<Frame>> {
        let size = || std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let mut last = size();
        let mut stable = 0;
        wait_until(Duration::from_millis(500), || {
            let now = size();
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
            stable >= 3
        });
        match self.proc.stop(Duration::from_secs(5)) {
            Some(s) if s.success() => {}
            other => bail!("tcpdump ended with {other:?}:\n{}", self.proc.log()),
        }
        pcap::read(&self.path)
    }
}
