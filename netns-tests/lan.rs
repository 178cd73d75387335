//! The physical-LAN topology for bridge scenarios: a fake LAN (a kernel bridge
//! switch) with hosts on it, one of which runs `lanbridge bridge` on its
//! `eth0` and reaches the relay of an [`Overlay`] through a second NIC,
//! `wan0`. Virtual hosts are edges with addresses in the LAN's subnet.
//!
//! Addresses: LAN 192.168.50.0/24 (bridge hosts .2, .3; LAN hosts .11 to
//! .19; virtual hosts .101 to .129; DHCP pool .150 to .199). Underlay as in
//! overlay.rs.
//!
//! Also traffic helpers used by the bridge scenarios: a TCP bulk transfer
//! between namespaces, a DHCP server (dnsmasq) and client (busybox udhcpc).

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lanbridge::core::mac::MacAddr;

use crate::{
    harness::{lanbridge_bin, wait_until, Lab, Ns, Proc, Switch},
    overlay::{ping_within, Edge, Overlay, RELAY_IP, RELAY_PORT},
};

/// The LAN's prefix length.
pub const LAN_PREFIX: u8 = 24;
/// First address of the DHCP pool served by [`dhcp_server`].
pub const DHCP_FIRST: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 150);
/// Last address of the DHCP pool served by [`dhcp_server`].
pub const DHCP_LAST: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 199);
/// How long a bridge may take to say `bridge running`.
pub const BRIDGE_START: Duration = Duration::from_secs(10);
/// How long first traffic across a bridge may take (registration, ARP).
pub const SETTLE: Duration = Duration::from_secs(15);

/// `192.168.50.{n}`.
pub fn lan_ip(n: u8) -> String {
    format!("192.168.50.{n}")
}

/// A host with a NIC `eth0` on a LAN switch.
#[derive(Clone)]
pub struct LanHost {
    /// Its namespace.
    pub ns: Ns,
    /// Its LAN address, without prefix.
    pub ip: String,
    /// The MAC of its `eth0`.
    pub mac: MacAddr,
}

/// Plugs a new namespace `short` into `lan` as `eth0` with address `ip`
/// (no prefix; /24 is added).
pub fn lan_host(lab: &Lab, lan: &Switch, short: &str, ip: &str) -> LanHost {
    let ns = lab.ns(short);
    let link = lab
        .plug(&ns, "eth0", lan, Some(&format!("{ip}/{LAN_PREFIX}")))
        .unwrap_or_else(|e| panic!("plug {short}: {e:#}"));
    LanHost {
        ns,
        ip: ip.to_string(),
        mac: link.mac,
    }
}

/// A LAN host running `lanbridge bridge` on its `eth0`.
pub struct BridgeHost {
    /// The host (its `eth0` is the bridged NIC; its MAC is the only one the
    /// LAN may see for virtual hosts).
    pub host: LanHost,
    /// The `lanbridge bridge` process.
    pub proc: Proc,
}

/// Starts `lanbridge bridge -v --iface eth0 EXTRA...` in `ns` and waits for
/// its `bridge running` line (panics with its log if it exits or stays
/// silent for [`BRIDGE_START`]).
pub fn start_bridge(ns: &Ns, extra: &[&str]) -> Proc {
    let mut args = vec!["bridge", "-v", "--iface", "eth0"];
    args.extend_from_slice(extra);
    let proc = ns.spawn(lanbridge_bin(), &args).unwrap();
    let ready = wait_until(BRIDGE_START, || {
        proc.log().contains("bridge running") || !proc.is_running()
    });
    assert!(
        ready && proc.is_running(),
        "bridge in {} did not start (`lanbridge {}`):\n{}",
        ns.name(),
        args.join(" "),
        proc.log()
    );
    proc
}

/// A bridge host `short` on `lan` at `ip`, also plugged into the underlay as
/// `wan0`, running `lanbridge bridge --iface eth0 --relay ...` with the
/// overlay's key.
pub fn relay_bridge(lab: &Lab, net: &Overlay, lan: &Switch, short: &str, ip: &str) -> BridgeHost {
    let host = lan_host(lab, lan, short, ip);
    net.plug(lab, &host.ns, "wan0");
    let relay = format!("{RELAY_IP}:{RELAY_PORT}");
    let proc = start_bridge(
        &host.ns,
        &["--relay", &relay, "--key-file", net.key.to_str().unwrap()],
    );
    BridgeHost { host, proc }
}

/// A virtual host: an edge in a new namespace with `ip` (no prefix) on
/// `tap0`, in the LAN's subnet.
pub fn virtual_host(lab: &Lab, net: &Overlay, short: &str, ip: &str) -> Edge {
    net.edge_at(lab, short, Some(&format!("{ip}/{LAN_PREFIX}")))
}

/// The standard topology: an overlay with its relay; a LAN `lan` with hosts
/// L1 (.11) and L2 (.12) and the bridge host B (.2) running a relay bridge.
pub struct BridgedLan {
    /// Underlay and relay.
    pub net: Overlay,
    /// The LAN switch (capture on [`Switch::BRIDGE`] in its namespace).
    pub lan: Switch,
    /// LAN host L1.
    pub l1: LanHost,
    /// LAN host L2.
    pub l2: LanHost,
    /// The bridge host B and its bridge.
    pub b: BridgeHost,
}

impl BridgedLan {
    /// Builds the standard topology and starts the bridge.
    pub fn new(lab: &Lab) -> BridgedLan {
        BridgedLan::with_switch(lab, lab.switch("lan"))
    }

    /// Builds the standard topology on `lan` (e.g. with a capture already
    /// running on it) and starts the bridge.
    pub fn with_switch(lab: &Lab, lan: Switch) -> BridgedLan {
        let net = Overlay::new(lab);
        let l1 = lan_host(lab, &lan, "l1", &lan_ip(11));
        let l2 = lan_host(lab, &lan, "l2", &lan_ip(12));
        let b = relay_bridge(lab, &net, &lan, "b", &lan_ip(2));
        BridgedLan {
            net,
            lan,
            l1,
            l2,
            b,
        }
    }

    /// A virtual host `short` at `192.168.50.{n}`.
    pub fn virtual_host(&self, lab: &Lab, short: &str, n: u8) -> Edge {
        virtual_host(lab, &self.net, short, &lan_ip(n))
    }
}

/// Asserts that `from` gets a ping reply from `to` within [`SETTLE`].
pub fn assert_ping(lab: &Lab, from: &Ns, to: &str) {
    assert!(
        ping_within(from, to, SETTLE),
        "{} cannot ping {to}:\n{}",
        from.short(),
        lab.logs()
    );
}

/// `len` bytes of deterministic pseudo-random data (xorshift64).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `data` over one TCP connection from a socket in `from` to a
/// listener on `port` in `to` (reached at `to_ip`: an IPv4 address, or an
/// IPv6 one in brackets) and returns what the
/// listener read until EOF. Fails if anything takes longer than `timeout`
/// in all.
pub fn tcp_transfer(
    from: &Ns,
    to: &Ns,
    to_ip: &str,
    port: u16,
    data: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let left = move || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let addr: SocketAddr = format!("{to_ip}:{port}").parse()?;
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let receiver = s.spawn(move || {
            to.enter(move || {
                let any: std::net::IpAddr = if addr.is_ipv6() {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                };
                let listener = TcpListener::bind((any, port)).context("bind")?;
                listener.set_nonblocking(true)?;
                let _ = ready_tx.send(());
                let mut stream = None;
                wait_until(left(), || match listener.accept() {
                    Ok((st, _)) => {
                        stream = Some(st);
                        true
                    }
                    Err(_) => false,
                });
                let mut stream = stream.context("no connection came")?;
                stream.set_nonblocking(false)?;
                let mut got = Vec::with_capacity(data.len());
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    stream.set_read_timeout(Some(left()))?;
                    match stream.read(&mut buf) {
                        Ok(0) => return Ok(got),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            bail!("read after {} bytes: {e}", got.len())
                        }
                    }
                }
            })
        });
        let sent = ready_rx
            .recv_timeout(left())
            .context("listener not ready")
            .and_then(|()| {
                from.enter(move || {
                    let mut stream =
                        TcpStream::connect_timeout(&addr, left()).context("connect")?;
                    stream.set_write_timeout(Some(left()))?;
                    stream.write_all(data).context("write")?;
                    stream.shutdown(std::net::Shutdown::Write)?;
                    // Wait for the receiver's close, so nothing is cut short.
                    stream.set_read_timeout(Some(left()))?;
                    let _ = stream.read(&mut [0u8; 1]);
                    Ok(())
                })
            });
        let got = receiver
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        sent.context("sender")?;
        got.context("receiver")
    })
}

/// The SHA-256 of `data`, in hex.
pub fn sha256(data: &[u8]) -> String {
    lanbridge::status::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Sends `len` pseudo-random bytes (from `seed`) over TCP from `from` to
/// `to` (at `to_ip`, `port`) within `timeout`, and asserts that the SHA-256
/// of what arrived is that of what was sent (panics with `what`, the
/// difference and the lab's logs otherwise). Returns how long it took.
#[allow(clippy::too_many_arguments)]
pub fn transfer_intact(
    lab: &Lab,
    what: &str,
    from: &Ns,
    to: &Ns,
    to_ip: &str,
    port: u16,
    len: usize,
    seed: u64,
    timeout: Duration,
) -> Duration {
    let data = pseudo_random(len, seed);
    let start = Instant::now();
    let got = tcp_transfer(from, to, to_ip, port, &data, timeout)
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", lab.logs()));
    let took = start.elapsed();
    let (sent, received) = (sha256(&data), sha256(&got));
    assert!(
        sent == received,
        "{what}: sha256 sent {sent}, received {received}: {}\n{}",
        diff_bytes(&data, &got),
        lab.logs()
    );
    eprintln!("{what}: {len} bytes intact in {took:.2?}");
    took
}

/// Describes how `got` differs from `want` (empty if equal), without
/// printing megabytes.
pub fn diff_bytes(want: &[u8], got: &[u8]) -> String {
    if want == got {
        return String::new();
    }
    let first = want.iter().zip(got).position(|(a, b)| a != b);
    format!(
        "sent {} bytes, received {}; first difference at {}",
        want.len(),
        got.len(),
        first.map_or("the end of the shorter".to_string(), |i| format!(
            "offset {i}"
        ))
    )
}

/// Starts dnsmasq as a DHCP server only (no DNS) on `iface` in `ns`, serving
/// [`DHCP_FIRST`]..=[`DHCP_LAST`], its lease file in the lab directory;
/// returns once it is serving.
pub fn dhcp_server(lab: &Lab, ns: &Ns, iface: &str) -> Proc {
    let dir = lab.dir();
    let leases = dir.join(format!("{}-dnsmasq.leases", ns.short()));
    let pid = dir.join(format!("{}-dnsmasq.pid", ns.short()));
    let proc = ns
        .spawn(
            "dnsmasq",
            &[
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--port=0",
                "--user=root",
                "--log-facility=-",
                "--log-dhcp",
                "--no-ping",
                "--dhcp-authoritative",
                &format!("--interface={iface}"),
                "--bind-interfaces",
                &format!("--dhcp-range={DHCP_FIRST},{DHCP_LAST},255.255.255.0,1h"),
                &format!("--dhcp-leasefile={}", leases.display()),
                &format!("--pid-file={}", pid.display()),
            ],
        )
        .unwrap();
    let up = wait_until(Duration::from_secs(10), || {
        proc.log().contains("DHCP, IP range") || !proc.is_running()
    });
    assert!(
        up && proc.is_running(),
        "dnsmasq did not start:\n{}",
        proc.log()
    );
    proc
}

/// Runs `busybox udhcpc` on `iface` in `ns` (without `-B`: it asks for
/// unicast replies) until it gets a lease or `timeout` passes. Its script
/// puts the address on `iface`. Returns the leased address.
pub fn dhcp_client(lab: &Lab, ns: &Ns, iface: &str, timeout: Duration) -> Option<Ipv4Addr> {
    dhcp_client_with(lab, ns, iface, timeout, &[])
}

/// [`dhcp_client`] with more udhcpc options, e.g. `-B` (ask for broadcast
/// replies) or `-t 3` (three discovers per run; the last `-t` wins). Each
/// run lasts until a lease or its last discover times out, so a `timeout`
/// shorter than a run means one run.
pub fn dhcp_client_with(
    lab: &Lab,
    ns: &Ns,
    iface: &str,
    timeout: Duration,
    extra: &[&str],
) -> Option<Ipv4Addr> {
    let lease = lab.dir().join(format!("{}-{iface}.lease", ns.short()));
    let script = udhcpc_script(lab.dir(), &format!("{}-{iface}", ns.short()), &lease);
    let script = script.to_str().unwrap();
    let mut args = vec![
        "udhcpc", "-i", iface, "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", script,
    ];
    args.extend_from_slice(extra);
    let mut got = None;
    wait_until(timeout, || {
        let _ = ns.try_run("busybox", &args, Duration::from_secs(15));
        got = std::fs::read_to_string(&lease)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        got.is_some()
    });
    got
}

/// Writes an executable udhcpc script that, on `bound`/`renew`, adds the
/// address to the interface and writes it to `lease`.
fn udhcpc_script(dir: &Path, stem: &str, lease: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{stem}-udhcpc.sh"));
    let text = format!(
        "#!/bin/sh\n\
         case \"$1\" in\n\
         bound|renew)\n\
         \x20 ip addr replace \"$ip/$mask\" dev \"$interface\" || exit 1\n\
         \x20 echo \"$ip\" > '{}'\n\
         \x20 ;;\n\
         esac\n\
         exit 0\n",
        lease.display()
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Checks the LAN topology and the traffic helpers without any bridge:
/// hosts on the fake LAN ping each other, dnsmasq leases an address to a
/// udhcpc client that asks for unicast replies, and 8 MB cross by TCP.
#[test]
fn lan_topology_and_helpers_work_without_a_bridge() {
    let Some(lab) = Lab::new("lan_topology") else {
        return;
    };
    let lan = lab.switch("lan");
    let l1 = lan_host(&lab, &lan, "l1", &lan_ip(11));
    let l2 = lan_host(&lab, &lan, "l2", &lan_ip(12));
    assert!(l1.ns.ping(&l2.ip, 1), "{}", lab.logs());
    assert!(l2.ns.arping("eth0", &l1.ip));
    assert_eq!(l1.ns.neigh(&l2.ip).unwrap().mac, Some(l2.mac));

    let _dhcp = dhcp_server(&lab, &l2.ns, "eth0");
    let c = lab.ns("c");
    lab.plug(&c, "eth0", &lan, None).unwrap();
    let ip = dhcp_client(&lab, &c, "eth0", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no lease:\n{}", lab.logs()));
    assert!((DHCP_FIRST..=DHCP_LAST).contains(&ip), "lease {ip}");
    assert!(l1.ns.ping(&ip.to_string(), 1), "{}", lab.logs());

    let data = pseudo_random(8 << 20, 7);
    let got = tcp_transfer(&l1.ns, &l2.ns, &l2.ip, 5001, &data, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(got == data, "{}", diff_bytes(&data, &got));
}
