//! `lanbridge demo`: builds a small world of network namespaces on this one
//! machine (a physical LAN with two hosts and a bridge host, an "internet"
//! with a relay, two virtual hosts running edges), runs the real `relay`,
//! `edge` and `bridge` (this very binary) inside it, and walks through what
//! they do: ARP and ping between LAN and virtual hosts, and what the LAN sees.
//!
//! Cleanup: everything lives in a [`Lab`], torn down on return, on error and
//! on SIGINT/SIGTERM. Those signals are blocked in every thread and taken by
//! one thread with `sigwait`, which tears the lab down (the lab refuses new
//! children from then on) and exits. Children also get SIGTERM if the demo
//! dies by SIGKILL (`PR_SET_PDEATHSIG`), and namespaces of dead demos are
//! swept at the next start.

use std::{
    fs::OpenOptions,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};

use crate::{
    cli::DemoArgs,
    core::{mac::MacAddr, proto::RelayKey, wire::NetworkKey},
    lab::{self, netns, tail, Lab, LabCloser, Link, Neighbour, Ns, Proc},
};

/// The shared subnet: the physical LAN's, which virtual hosts join.
const SUBNET: &str = "192.168.77.0/24";
const LAN1_IP: &str = "192.168.77.11";
const LAN2_IP: &str = "192.168.77.12";
const BRIDGEHOST_IP: &str = "192.168.77.2";
const VIRT1_IP: &str = "192.168.77.101";
const VIRT2_IP: &str = "192.168.77.102";
/// The "internet" (underlay).
const INET: &str = "172.31.0.0/24";
const RELAY_IP: &str = "172.31.0.1";
const RELAY_PORT: u16 = 7171;
const BRIDGEHOST_WAN_IP: &str = "172.31.0.2";
const VIRT1_WAN_IP: &str = "172.31.0.11";
const VIRT2_WAN_IP: &str = "172.31.0.12";
/// The TAP MACs the edges get (locally administered).
const VIRT1_MAC: &str = "02:00:00:00:4d:65";
const VIRT2_MAC: &str = "02:00:00:00:4d:66";

/// How long a component may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one traffic step may take (retries included).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// After this long, a step says what it is waiting for.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(1);
/// Poll interval for log lines and retries.
const POLL: Duration = Duration::from_millis(20);
/// Log lines shown under a failed step.
const LOG_TAIL: usize = 12;

/// The error printed when not root.
pub const NEEDS_ROOT: &str = "lanbridge demo needs root: it builds network namespaces";

/// The namespace name prefix of the demo run by process `pid`.
pub fn prefix_for(pid: u32) -> String {
    format!("lbdemo-{pid}")
}

/// The pid in a demo namespace name `lbdemo-{pid}-{short}`.
fn demo_owner(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix("lbdemo-")?.split_once('-')?;
    pid.parse().ok()
}

/// Removes the directories of demos killed before they could clean up
/// (SIGKILL): `lbdemo-{pid}` in the temp dir, pid dead, key file still in
/// it. Directories kept on purpose after a failed tour have no key file.
fn sweep_stale_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("lbdemo-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() && e.path().join("net.key").exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Exit status the signal thread uses; negative: 128 + the signal number.
static EXIT_ON_SIGNAL: AtomicI32 = AtomicI32::new(-1);
/// Set by the signal thread before it tears the lab down.
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// The lab the signal thread tears down.
static CLOSER: OnceLock<LabCloser> = OnceLock::new();

/// Runs the demo. `Ok` only if every step passed.
pub fn run(args: DemoArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(NEEDS_ROOT);
    }
    let missing: Vec<&str> = ["ip", "ping", "arping"]
        .into_iter()
        .filter(|p| !in_path(p))
        .collect();
    if !missing.is_empty() {
        bail!(
            "lanbridge demo needs {} (Debian/Ubuntu: apt-get install iproute2 iputils-ping arping)",
            missing.join(", ")
        );
    }
    install_signal_thread()?;
    let result = run_inner(args);
    // Whatever failed because the lab vanished under us, the signal thread
    // owns the exit now.
    park_if_signalled();
    result
}

/// Whether `program` is an executable file in a `$PATH` directory.
fn in_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Once a signal has come, the signal thread tears down and exits: the main
/// thread must neither exit first nor report the fallout as failures.
fn park_if_signalled() {
    if SIGNALLED.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

fn run_inner(args: DemoArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let pid = std::process::id();
    let prefix = prefix_for(pid);
    netns::sweep_stale(demo_owner);
    sweep_stale_dirs();
    let dir = std::env::temp_dir().join(&prefix);
    if dir.exists() {
        // Left by an earlier process with our pid; nothing of it runs.
        std::fs::remove_dir_all(&dir).with_context(|| format!("rm -r {}", dir.display()))?;
    }
    let lab = Lab::create(&prefix, &dir)?;
    lab.parent_death_signal(true);
    let _ = CLOSER.set(lab.closer());

    let t0 = Instant::now();
    let world = World::build(&lab).context("building the namespaces")?;
    let setup = t0.elapsed();
    world.draw(&lab, setup);
    let key = write_key(lab.dir())?;

    let mut tour = Tour::default();
    let ok = tour.run(&world, &exe, &key)?;
    let (passed, total) = (tour.passed, tour.passed + tour.failed.len());
    println!(
        "\n{} of {total} steps ok; tour {:.1} s, whole demo {:.1} s",
        passed,
        tour.elapsed.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    if !ok {
        lab.keep_files(true);
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_file_name("relay.key"));
        println!("logs kept in {}", lab.dir().display());
    }
    if args.keep {
        print_keep(&world, &exe, lab.dir());
        EXIT_ON_SIGNAL.store(if ok { 0 } else { 1 }, Ordering::SeqCst);
        loop {
            // The signal thread tears down and exits.
            std::thread::park();
        }
    }
    print!("cleaning up ... ");
    let _ = std::io::stdout().flush();
    let t = Instant::now();
    drop(lab);
    println!(
        "done ({} ms): no namespace or process of the demo is left",
        t.elapsed().as_millis()
    );
    if ok {
        Ok(())
    } else {
        bail!(
            "{} of {total} demo steps failed: {}",
            tour.failed.len(),
            tour.failed.join("; ")
        )
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread spawned
/// from now on) and starts the thread that waits for them. Must run before
/// any other thread exists. Children get an empty mask from `Command`.
fn install_signal_thread() -> Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("block SIGINT and SIGTERM")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = set.wait().unwrap_or(Signal::SIGTERM);
            SIGNALLED.store(true, Ordering::SeqCst);
            eprintln!("\n{sig}: removing the demo's processes and namespaces ...");
            if let Some(c) = CLOSER.get() {
                c.close();
            }
            eprintln!("cleaned up");
            let code = EXIT_ON_SIGNAL.load(Ordering::SeqCst);
            std::process::exit(if code >= 0 { code } else { 128 + sig as i32 });
        })
        .context("start the signal thread")?;
    Ok(())
}

/// Writes a fresh network key, readable only by root.
fn write_key(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("net.key");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(f, "{}", NetworkKey::generate().to_hex())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// A host: its namespace and its NIC on a switch.
struct Host {
    ns: Ns,
    eth0: Link,
}

/// The namespaces and links of the demo.
struct World {
    lan_switch: Ns,
    inet_switch: Ns,
    lan1: Host,
    lan2: Host,
    bridgehost: Host,
    bridgehost_wan: Link,
    relay: Host,
    virt1: Host,
    virt2: Host,
}

impl World {
    fn build(lab: &Lab) -> Result<World> {
        let lan = lab.try_switch("lan")?;
        let inet = lab.try_switch("inet")?;
        let host = |short: &str, switch: &lab::Switch, ip: &str| -> Result<Host> {
            let ns = lab.try_ns(short)?;
            let eth0 = lab.plug(&ns, "eth0", switch, Some(&format!("{ip}/24")))?;
            Ok(Host { ns, eth0 })
        };
        let lan1 = host("lan1", &lan, LAN1_IP)?;
        let lan2 = host("lan2", &lan, LAN2_IP)?;
        let bridgehost = host("bridgehost", &lan, BRIDGEHOST_IP)?;
        let bridgehost_wan = lab.plug(
            &bridgehost.ns,
            "wan0",
            &inet,
            Some(&format!("{BRIDGEHOST_WAN_IP}/24")),
        )?;
        let relay = host("relay", &inet, RELAY_IP)?;
        let virt1 = host("virt1", &inet, VIRT1_WAN_IP)?;
        let virt2 = host("virt2", &inet, VIRT2_WAN_IP)?;
        Ok(World {
            lan_switch: lan.ns().clone(),
            inet_switch: inet.ns().clone(),
            lan1,
            lan2,
            bridgehost,
            bridgehost_wan,
            relay,
            virt1,
            virt2,
        })
    }

    fn draw(&self, lab: &Lab, setup: Duration) {
        let p = lab.prefix();
        println!("lanbridge demo: a physical LAN and two far-away hosts on one subnet, {SUBNET}");
        println!();
        println!(
            "Topology (namespaces {p}-*, built in {} ms):",
            setup.as_millis()
        );
        println!();
        println!("    lan1 .11   lan2 .12   bridgehost .2        relay 172.31.0.1:7171   virt1 .101   virt2 .102");
        println!("       |          |          |  (bridge)  wan0      |  (relay)             | (edge)     | (edge)");
        println!("    ===+== LAN switch ==+====+       +=============+===== \"internet\" switch ===+============+");
        println!("                                      \\____________/");
        println!();
        let row = |name: &str, ifname: &str, ip: &str, mac: &str, ns: &str, what: &str| {
            println!("  {name:<11} {ifname:<5} {ip:<18} {mac:<18} {ns:<24} {what}");
        };
        row("host", "nic", "address", "MAC", "namespace", "runs");
        println!("  physical LAN {SUBNET}, switch = kernel bridge br0 in {p}-lan");
        for (name, h, ip, what) in [
            ("lan1", &self.lan1, LAN1_IP, ""),
            ("lan2", &self.lan2, LAN2_IP, ""),
            (
                "bridgehost",
                &self.bridgehost,
                BRIDGEHOST_IP,
                "lanbridge bridge --iface eth0",
            ),
        ] {
            let mac = h.eth0.mac.to_string();
            row(name, "eth0", &format!("{ip}/24"), &mac, h.ns.name(), what);
        }
        println!("  \"internet\" {INET}, switch = kernel bridge br0 in {p}-inet");
        let wan_mac = self.bridgehost_wan.mac.to_string();
        let wan_ip = format!("{BRIDGEHOST_WAN_IP}/24");
        row(
            "bridgehost",
            "wan0",
            &wan_ip,
            &wan_mac,
            self.bridgehost.ns.name(),
            "",
        );
        for (name, h, ip, what) in [
            ("relay", &self.relay, RELAY_IP, "lanbridge relay"),
            ("virt1", &self.virt1, VIRT1_WAN_IP, "lanbridge edge"),
            ("virt2", &self.virt2, VIRT2_WAN_IP, "lanbridge edge"),
        ] {
            let mac = h.eth0.mac.to_string();
            row(name, "eth0", &format!("{ip}/24"), &mac, h.ns.name(), what);
        }
        println!(
            "  virtual hosts on the LAN's subnet (TAPs made by the edges, frames via the relay)"
        );
        for (name, h, ip, mac) in [
            ("virt1", &self.virt1, VIRT1_IP, VIRT1_MAC),
            ("virt2", &self.virt2, VIRT2_IP, VIRT2_MAC),
        ] {
            row(name, "tap0", &format!("{ip}/24"), mac, h.ns.name(), "");
        }
        println!();
        println!("logs: {}", lab.dir().display());
        println!();
    }
}

/// The guided tour: one line per step.
#[derive(Default)]
struct Tour {
    passed: usize,
    failed: Vec<String>,
    elapsed: Duration,
}

/// What a step's probe found: done with a message, not yet, or failed for
/// good.
enum Probe {
    Done(String),
    NotYet(String),
    Failed(String),
}

impl Tour {
    /// Polls `probe` until it is done, fails, or `timeout` passes; prints
    /// `... waiting for {waiting}` once after a second, then the result
    /// line; on failure the tails of `logs`. Returns the success message.
    fn step(
        &mut self,
        title: &str,
        waiting: &str,
        timeout: Duration,
        logs: &[&Proc],
        mut probe: impl FnMut() -> Probe,
    ) -> bool {
        let start = Instant::now();
        let mut said = false;
        let result = loop {
            let probed = probe();
            park_if_signalled();
            match probed {
                Probe::Done(msg) => break Ok(msg),
                Probe::Failed(why) => break Err(why),
                Probe::NotYet(why) => {
                    if start.elapsed() >= timeout {
                        break Err(format!("{why} (gave up after {} s)", timeout.as_secs()));
                    }
                }
            }
            if !said && start.elapsed() >= SAY_WAITING_AFTER {
                println!("      ... waiting for {waiting}");
                said = true;
            }
            std::thread::sleep(POLL);
        };
        let ms = start.elapsed().as_millis();
        park_if_signalled();
        match result {
            Ok(msg) => {
                println!("[ok]   {msg} ({ms} ms)");
                self.passed += 1;
                true
            }
            Err(why) => {
                println!("[FAIL] {title}: {why} ({ms} ms)");
                for p in logs {
                    println!(
                        "       --- last lines of {} ({}) ---",
                        p.label(),
                        p.log_path().display()
                    );
                    for line in tail(&p.log(), LOG_TAIL).lines() {
                        println!("       | {line}");
                    }
                }
                self.failed.push(title.to_string());
                false
            }
        }
    }

    /// Starts the components and runs every step. `Ok(false)` if a step
    /// failed.
    fn run(&mut self, w: &World, exe: &Path, key: &Path) -> Result<bool> {
        let t0 = Instant::now();
        let ok = self.tour(w, exe, key);
        self.elapsed = t0.elapsed();
        Ok(ok? && self.failed.is_empty())
    }

    fn tour(&mut self, w: &World, exe: &Path, key: &Path) -> Result<bool> {
        let exe_s = exe.to_string_lossy().into_owned();
        let key_s = key.to_string_lossy().into_owned();
        // The relay gets only the relay key, as in a real deployment.
        let relay_key = key.with_file_name("relay.key");
        let text =
            std::fs::read_to_string(key).with_context(|| format!("read {}", key.display()))?;
        let network = NetworkKey::parse(&text).context("the demo's network key")?;
        std::fs::write(&relay_key, RelayKey::derive(&network).to_text() + "\n")
            .with_context(|| format!("write {}", relay_key.display()))?;
        let relay_key_s = relay_key.to_string_lossy().into_owned();
        let relay_addr = format!("{RELAY_IP}:{RELAY_PORT}");
        let spawn = |ns: &Ns, label: &str, args: &[&str]| -> Result<Proc> {
            let mut cmd = ns.try_cmd(&exe_s)?;
            cmd.args(args);
            ns.spawn_cmd(cmd, label)
        };

        println!("Starting the real programs (this binary, {exe_s}):");
        let relay = spawn(
            &w.relay.ns,
            "relay",
            &["relay", "--listen", &relay_addr, "--key-file", &relay_key_s],
        )?;
        let up = self.step(
            "relay",
            "the relay to start",
            START_TIMEOUT,
            &[&relay],
            || match ready(&relay, &["relay running"]) {
                Probe::Done(_) => Probe::Done(format!(
                    "relay      lanbridge relay serves the network on UDP {relay_addr} in {}",
                    w.relay.ns.name()
                )),
                other => other,
            },
        );
        if !up {
            return Ok(false);
        }

        let edge = |h: &Host, ip: &str, mac: &str| {
            spawn(
                &h.ns,
                "edge",
                &[
                    "edge",
                    "--relay",
                    &relay_addr,
                    "--key-file",
                    &key_s,
                    "--tap",
                    "tap0",
                    "--address",
                    &format!("{ip}/24"),
                    "--mac",
                    mac,
                ],
            )
        };
        let e1 = edge(&w.virt1, VIRT1_IP, VIRT1_MAC)?;
        let e2 = edge(&w.virt2, VIRT2_IP, VIRT2_MAC)?;
        let up = self.step(
            "edges",
            "the edges to register with the relay",
            START_TIMEOUT,
            &[&e1, &e2, &relay],
            || match (
                ready(&e1, &["registered with relay"]),
                ready(&e2, &["registered with relay"]),
            ) {
                (Probe::Done(_), Probe::Done(_)) => Probe::Done(format!(
                    "edges      virt1 and virt2 made tap0 ({VIRT1_IP}, {VIRT2_IP}) and registered with the relay"
                )),
                (Probe::Failed(f), _) | (_, Probe::Failed(f)) => Probe::Failed(f),
                (Probe::NotYet(n), _) | (_, Probe::NotYet(n)) => Probe::NotYet(n),
            },
        );
        if !up {
            return Ok(false);
        }

        let bridge = spawn(
            &w.bridgehost.ns,
            "bridge",
            &[
                "bridge",
                "--iface",
                "eth0",
                "--relay",
                &relay_addr,
                "--key-file",
                &key_s,
            ],
        )?;
        let bh_mac = w.bridgehost.eth0.mac;
        let up = self.step(
            "bridge",
            "the bridge to start and register",
            START_TIMEOUT,
            &[&bridge, &relay],
            || match ready(&bridge, &["bridge running", "registered with relay"]) {
                Probe::Done(_) => Probe::Done(format!(
                    "bridge     bridgehost shares its LAN through eth0 ({bh_mac}) and registered with the relay"
                )),
                other => other,
            },
        );
        if !up {
            return Ok(false);
        }

        println!();
        println!("Across the bridge and the relay:");
        let all = [&relay, &e1, &e2, &bridge];
        let lan1_mac = w.lan1.eth0.mac;
        let arp = |from: &Ns, iface: &str, to: &str| {
            // Habets' arping waits out -w even after the reply unless told
            // how many replies to wait for (-C); iputils' quits with -f.
            let first = if habets_arping() { "-C" } else { "-f" };
            let mut args = vec!["-c", "1", "-w", "1", "-I", iface, first];
            if first == "-C" {
                args.push("1");
            }
            args.push(to);
            let out = from.try_run("arping", &args, Duration::from_secs(5));
            match out {
                Ok(o) if o.status.success() => {
                    match first_mac(&String::from_utf8_lossy(&o.stdout)) {
                        Some(m) => Ok(m),
                        None => Err(format!(
                            "arping printed no MAC: {}",
                            String::from_utf8_lossy(&o.stdout).trim()
                        )),
                    }
                }
                Ok(_) => Err(format!("no ARP reply from {to}")),
                Err(e) => Err(format!("{e:#}")),
            }
        };
        self.step(
            "ARP virt1 → lan1",
            "an ARP reply from lan1",
            STEP_TIMEOUT,
            &all,
            || match arp(&w.virt1.ns, "tap0", LAN1_IP) {
                Ok(m) if m == lan1_mac => Probe::Done(format!(
                    "virt1 → lan1: ARP resolved {LAN1_IP} is-at {m} (lan1's own MAC)"
                )),
                Ok(m) => Probe::Failed(format!(
                    "{LAN1_IP} is-at {m}, expected lan1's MAC {lan1_mac}"
                )),
                Err(e) => Probe::NotYet(e),
            },
        );
        self.step(
            "ARP lan1 → virt1",
            "an ARP reply from virt1",
            STEP_TIMEOUT,
            &all,
            || match arp(&w.lan1.ns, "eth0", VIRT1_IP) {
                Ok(m) if m == bh_mac => Probe::Done(format!(
                    "lan1 → virt1: ARP resolved {VIRT1_IP} is-at {m} (bridgehost's eth0, not virt1's {VIRT1_MAC})"
                )),
                Ok(m) => Probe::Failed(format!(
                    "{VIRT1_IP} is-at {m}, expected bridgehost's MAC {bh_mac}"
                )),
                Err(e) => Probe::NotYet(e),
            },
        );
        let pings = [
            ("virt1", &w.virt1.ns, "lan1", LAN1_IP),
            ("lan1", &w.lan1.ns, "virt1", VIRT1_IP),
            ("lan1", &w.lan1.ns, "virt2", VIRT2_IP),
            ("virt2", &w.virt2.ns, "lan2", LAN2_IP),
            ("virt1", &w.virt1.ns, "virt2", VIRT2_IP),
            ("virt2", &w.virt2.ns, "virt1", VIRT1_IP),
        ];
        for (from, ns, to, ip) in pings {
            self.step(
                &format!("ping {from} → {to}"),
                &format!("{to} to answer pings"),
                STEP_TIMEOUT,
                &all,
                || match ping(ns, ip) {
                    Ok(rtt) => Probe::Done(format!("{from} → {to}: ping {ip} answered, rtt {rtt}")),
                    Err(e) => Probe::NotYet(e),
                },
            );
        }

        println!();
        println!("What the hosts believe (neighbour tables):");
        let tap1 = w.virt1.ns.link_mac("tap0");
        let tap2 = w.virt2.ns.link_mac("tap0");
        for (name, ip, tap) in [("virt1", VIRT1_IP, tap1), ("virt2", VIRT2_IP, tap2)] {
            let tap = tap.map_or("?".to_string(), |m| m.to_string());
            self.step(
                &format!("lan1's neighbour entry for {name}"),
                &format!("lan1's neighbour entry for {name}"),
                STEP_TIMEOUT,
                &all,
                || match w.lan1.ns.try_neigh(ip) {
                    Ok(Some(n)) => match n.mac {
                        Some(m) if m == bh_mac => Probe::Done(format!(
                            "lan1 sees {name} {ip} at {m} = bridgehost's eth0 ({}); {name}'s real tap0 is {tap}",
                            n.state
                        )),
                        Some(m) => Probe::Failed(format!(
                            "lan1 has {ip} at {m}, expected bridgehost's MAC {bh_mac}"
                        )),
                        None => Probe::NotYet(format!("lan1's entry for {ip} is {}", n.state)),
                    },
                    Ok(None) => Probe::NotYet(format!("lan1 has no entry for {ip}")),
                    Err(e) => Probe::Failed(format!("{e:#}")),
                },
            );
        }
        self.step(
            "virt1's neighbour entry for lan1",
            "virt1's neighbour entry for lan1",
            STEP_TIMEOUT,
            &all,
            || match w.virt1.ns.try_neigh(LAN1_IP) {
                Ok(Some(Neighbour { mac: Some(m), .. })) if m == lan1_mac => Probe::Done(format!(
                    "virt1 sees lan1 {LAN1_IP} at {m} = lan1's real eth0"
                )),
                Ok(Some(Neighbour { mac: Some(m), .. })) => Probe::Failed(format!(
                    "virt1 has {LAN1_IP} at {m}, expected lan1's MAC {lan1_mac}"
                )),
                Ok(_) => Probe::NotYet(format!("virt1 has no MAC for {LAN1_IP} yet")),
                Err(e) => Probe::Failed(format!("{e:#}")),
            },
        );
        println!(
            "       why: the bridge rewrites virtual hosts' MACs to its own NIC's (MAC translation), so the LAN only ever\n            sees bridgehost's eth0 and needs no promiscuous mode; LAN hosts keep their own MACs in the overlay."
        );
        Ok(true)
    }
}

/// `Done` once `proc`'s log holds every one of `lines`, `Failed` if it
/// exited first.
fn ready(proc: &Proc, lines: &[&str]) -> Probe {
    let log = proc.log();
    if let Some(missing) = lines.iter().find(|l| !log.contains(*l)) {
        if let Some(status) = proc.try_status() {
            return Probe::Failed(format!("{} exited ({status})", proc.label()));
        }
        return Probe::NotYet(format!("{} has not logged {missing:?}", proc.label()));
    }
    Probe::Done(String::new())
}

/// One ping with a one-second wait; the round trip time as ping prints it.
fn ping(ns: &Ns, ip: &str) -> Result<String, String> {
    let out = ns
        .try_run(
            "ping",
            &["-n", "-c", "1", "-W", "1", ip],
            Duration::from_secs(5),
        )
        .map_err(|e| format!("{e:#}"))?;
    if !out.status.success() {
        return Err(format!("no reply from {ip}"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("time="))
        .map_or("?".to_string(), |t| format!("{t} ms")))
}

/// Whether `arping` is Thomas Habets' (Debian's `arping` package) rather
/// than iputils'; asked once.
fn habets_arping() -> bool {
    static HABETS: OnceLock<bool> = OnceLock::new();
    *HABETS.get_or_init(|| {
        std::process::Command::new("arping")
            .arg("--help")
            .output()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text).contains("Habets")
            })
            .unwrap_or(false)
    })
}

/// The first MAC address in `text` (arping prints the replier's, as
/// `aa:bb:...` or `[AA:BB:...]`).
fn first_mac(text: &str) -> Option<MacAddr> {
    text.split_whitespace().find_map(|w| {
        w.trim_matches(|c: char| !c.is_ascii_hexdigit())
            .parse()
            .ok()
    })
}

/// Prints how to look around a kept demo.
fn print_keep(w: &World, exe: &Path, dir: &Path) {
    let exe = exe.display();
    println!();
    println!("Everything keeps running (--keep). Explore it, e.g.:");
    for cmd in [
        format!("ip netns exec {} ping {VIRT1_IP}", w.lan1.ns.name()),
        format!("ip netns exec {} ip neigh", w.lan1.ns.name()),
        format!(
            "ip netns exec {} arping -I tap0 {LAN2_IP}",
            w.virt1.ns.name()
        ),
        format!(
            "ip netns exec {} {exe} status        (the bridge's learned tables and counters)",
            w.bridgehost.ns.name()
        ),
        format!(
            "ip netns exec {} tcpdump -eni br0    (every frame on the LAN switch)",
            w.lan_switch.name()
        ),
        format!(
            "ip netns exec {} tcpdump -ni br0 udp port {RELAY_PORT}    (the encrypted underlay)",
            w.inet_switch.name()
        ),
        format!("less {}/*.log", dir.display()),
    ] {
        println!("  {cmd}");
    }
    println!("Press Ctrl-C to remove every namespace and process of the demo.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_macs_in_both_arping_outputs() {
        let habets = "ARPING 192.168.77.11\n60 bytes from 3a:1b:00:aa:bb:cc (192.168.77.11): index=0 time=1.2 msec\n";
        let iputils = "Unicast reply from 192.168.77.11 [3A:1B:00:AA:BB:CC]  0.8ms\n";
        let want: MacAddr = "3a:1b:00:aa:bb:cc".parse().unwrap();
        assert_eq!(first_mac(habets), Some(want));
        assert_eq!(first_mac(iputils), Some(want));
        assert_eq!(first_mac("Timeout\n"), None);
    }

    #[test]
    fn demo_namespace_names_name_their_owner() {
        assert_eq!(demo_owner("lbdemo-4242-lan1"), Some(4242));
        assert_eq!(demo_owner("lbdemo-x-lan1"), None);
        assert_eq!(demo_owner("lb42x0-relay"), None);
        assert!(format!("{}-lan1", prefix_for(7)).starts_with("lbdemo-7-"));
    }
}
