//! The virtual-LAN topology shared by scenarios: an underlay "internet"
//! switch, a relay namespace, and edge namespaces, each running the real
//! `lanbridge` binary.
//!
//! Underlay: 172.16.0.0/24 (relay at .1, hosts from .10). Overlay:
//! 10.10.0.0/24 on TAP `tap0` in each edge namespace ([`Overlay::edge`]), or
//! any subnet ([`Overlay::edge_at`], e.g. a bridged LAN's).

use std::{path::PathBuf, time::Duration};

use lanbridge::core::wire::NetworkKey;

use crate::harness::{lanbridge_bin, wait_until, Lab, Ns, Proc, Switch};

/// The relay's UDP port on the underlay.
pub const RELAY_PORT: u16 = 7171;
/// The relay's underlay address.
pub const RELAY_IP: &str = "172.16.0.1";

/// An underlay with a relay.
pub struct Overlay {
    /// The internet switch.
    pub inet: Switch,
    /// The relay's namespace.
    pub relay_ns: Ns,
    /// The running relay.
    pub relay: Proc,
    /// The network key file.
    pub key: PathBuf,
    next_host: std::cell::Cell<u8>,
}

/// One edge: its namespace and process.
pub struct Edge {
    /// The edge's namespace (TAP `tap0` lives here).
    pub ns: Ns,
    /// The `lanbridge edge` process.
    pub proc: Proc,
    /// Its overlay IP, without prefix (empty if started without one).
    pub ip: String,
}

/// Writes a fresh key file into the lab directory.
pub fn key_file(lab: &Lab, name: &str) -> PathBuf {
    let path = lab.dir().join(name);
    std::fs::write(&path, NetworkKey::generate().to_hex() + "\n").unwrap();
    path
}

impl Overlay {
    /// Builds the underlay and starts a relay serving one network.
    pub fn new(lab: &Lab) -> Overlay {
        let inet = lab.switch("inet");
        let relay_ns = lab.ns("relay");
        lab.plug(&relay_ns, "eth0", &inet, Some(&format!("{RELAY_IP}/24")))
            .unwrap();
        let key = key_file(lab, "net.key");
        let relay = start_relay(&relay_ns, &key);
        Overlay {
            inet,
            relay_ns,
            relay,
            key,
            next_host: std::cell::Cell::new(10),
        }
    }

    /// Plugs a new namespace into the underlay; returns it with its underlay IP.
    pub fn host(&self, lab: &Lab, short: &str) -> (Ns, String) {
        let ns = lab.ns(short);
        let ip = self.plug(lab, &ns, "eth0");
        (ns, ip)
    }

    /// Plugs the existing namespace `ns` into the underlay as `ifname` (for
    /// a host that also sits on another network); returns its underlay IP.
    pub fn plug(&self, lab: &Lab, ns: &Ns, ifname: &str) -> String {
        let n = self.next_host.get();
        self.next_host.set(n + 1);
        let ip = format!("172.16.0.{n}");
        lab.plug(ns, ifname, &self.inet, Some(&format!("{ip}/24")))
            .unwrap();
        ip
    }

    /// Starts an edge in a new namespace with overlay address `10.10.0.{n}`.
    pub fn edge(&self, lab: &Lab, short: &str, n: u8) -> Edge {
        self.edge_with_key(lab, short, n, &self.key.clone())
    }

    /// Like [`Overlay::edge`], with another key file.
    pub fn edge_with_key(&self, lab: &Lab, short: &str, n: u8, key: &std::path::Path) -> Edge {
        self.edge_with(lab, short, n, key, &[])
    }

    /// Like [`Overlay::edge`], with a key file and `extra` arguments for
    /// `lanbridge edge`.
    pub fn edge_with(
        &self,
        lab: &Lab,
        short: &str,
        n: u8,
        key: &std::path::Path,
        extra: &[&str],
    ) -> Edge {
        let mac = format!("02:00:00:00:10:{n:02x}");
        self.start_edge(
            lab,
            short,
            Some(&format!("10.10.0.{n}/24")),
            Some(&mac),
            key,
            extra,
        )
    }

    /// Starts an edge in a new namespace with the overlay address `cidr`
    /// (any subnet, e.g. `"192.168.50.101/24"`), or with none (for DHCP).
    /// Its MAC is `02:00:00:00:XX:YY` from the last two bytes of an IPv4
    /// address, else chosen by the kernel.
    pub fn edge_at(&self, lab: &Lab, short: &str, cidr: Option<&str>) -> Edge {
        let mac = cidr
            .and_then(|c| c.split('/').next()?.parse::<std::net::Ipv4Addr>().ok())
            .map(|ip| {
                let o = ip.octets();
                format!("02:00:00:00:{:02x}:{:02x}", o[2], o[3])
            });
        self.start_edge(lab, short, cidr, mac.as_deref(), &self.key.clone(), &[])
    }

    /// Starts `lanbridge edge` with TAP `tap0` in a new namespace on the
    /// underlay, with optional address and MAC; waits for the TAP.
    fn start_edge(
        &self,
        lab: &Lab,
        short: &str,
        cidr: Option<&str>,
        mac: Option<&str>,
        key: &std::path::Path,
        extra: &[&str],
    ) -> Edge {
        let (ns, _) = self.host(lab, short);
        let relay = format!("{RELAY_IP}:{RELAY_PORT}");
        let mut args = vec![
            "edge",
            "-v",
            "--relay",
            &relay,
            "--key-file",
            key.to_str().unwrap(),
            "--tap",
            "tap0",
        ];
        if let Some(c) = cidr {
            args.extend(["--address", c]);
        }
        if let Some(m) = mac {
            args.extend(["--mac", m]);
        }
        args.extend_from_slice(extra);
        let proc = ns.spawn(lanbridge_bin(), &args).unwrap();
        let up = wait_until(Duration::from_secs(10), || ns.has_link("tap0"));
        assert!(up, "edge {short} made no tap0; its log:\n{}", proc.log());
        let ip = cidr
            .map(|c| c.split('/').next().unwrap().to_string())
            .unwrap_or_default();
        Edge { ns, proc, ip }
    }
}

/// Starts `lanbridge relay` in `ns` on the standard port.
pub fn start_relay(ns: &Ns, key: &std::path::Path) -> Proc {
    start_relay_with(ns, key, &[])
}

/// [`start_relay`] with `extra` arguments; waits until it runs.
pub fn start_relay_with(ns: &Ns, key: &std::path::Path, extra: &[&str]) -> Proc {
    let listen = format!("{RELAY_IP}:{RELAY_PORT}");
    let mut args = vec![
        "relay",
        "-v",
        "--listen",
        &listen,
        "--key-file",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let p = ns.spawn(lanbridge_bin(), &args).unwrap();
    let up = wait_until(Duration::from_secs(10), || {
        p.log().contains("relay running") || !p.is_running()
    });
    assert!(up && p.is_running(), "relay did not start:\n{}", p.log());
    p
}

/// Pings until a reply comes or `timeout` passes (the first pings may be
/// spent on registration and ARP).
pub fn ping_within(ns: &Ns, dst: &str, timeout: Duration) -> bool {
    wait_until(timeout, || {
        ns.ping_args(&["-n", "-q", "-c", "1", "-W", "1", dst])
    })
}

/// Pings `count` times, 50 ms apart; returns the number of replies.
pub fn ping_count(ns: &Ns, dst: &str, count: u32, extra: &[&str]) -> u32 {
    let c = count.to_string();
    let mut args = vec!["-n", "-c", &c, "-i", "0.05", "-W", "1"];
    args.extend_from_slice(extra);
    args.push(dst);
    let out = ns.run("ping", &args);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}
