//! The virtual-LAN topology shared by scenarios: an underlay "internet"
//! switch, a relay namespace, and edge namespaces, each running the real
//! `lanbridge` binary.
//!
//! Underlay: 172.16.0.0/24 (relay at .1, hosts from .10). Overlay:
//! 10.10.0.0/24 on TAP `tap0` in each edge namespace ([`Overlay::edge`]), or
//! any subnet ([`Overlay::edge_at`], e.g. a bridged LAN's).
//!
//! The underlay can be made lossy ([`Overlay::lose_udp`]): the internet
//! switch then drops a random share of the UDP datagrams it forwards.

use std::{
    cell::{Cell, RefCell},
    path::PathBuf,
    time::Duration,
};

use lanbridge::core::{proto::RelayKey, wire::NetworkKey};
use nix::sys::signal::Signal;

use crate::harness::{lanbridge_bin, wait_until, Lab, Ns, Proc, Switch};

/// The relay's UDP port on the underlay.
pub const RELAY_PORT: u16 = 7171;
/// The relay's underlay address.
pub const RELAY_IP: &str = "172.16.0.1";
/// The nftables table (bridge family, in the internet switch's namespace)
/// that [`Overlay::lose_udp`] makes.
const LOSS_TABLE: &str = "lbloss";

/// An underlay with a relay.
pub struct Overlay {
    /// The internet switch.
    pub inet: Switch,
    /// The relay's namespace.
    pub relay_ns: Ns,
    /// The running relay.
    pub relay: Proc,
    /// The network key file (the members').
    pub key: PathBuf,
    /// The network's relay key file (the relay's).
    pub relay_key: PathBuf,
    next_host: Cell<u8>,
    /// Every underlay veth so far (the relay's and each host's).
    links: RefCell<Vec<UnderlayLink>>,
    /// Set by [`Overlay::lose_udp`]: veths plugged later get UDP GSO cut too.
    lossy: Cell<bool>,
}

/// One veth between a namespace and the internet switch.
struct UnderlayLink {
    /// The host's namespace.
    ns: Ns,
    /// The host's end.
    ifname: String,
    /// The switch's end (a port of its bridge).
    port: String,
}

/// UDP datagrams the lossy underlay's rule looked at and dropped (see
/// [`Overlay::lose_udp`]), counted since the rule was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpLoss {
    /// Datagrams the internet switch forwarded or dropped (each hop counts).
    pub seen: u64,
    /// Datagrams it dropped.
    pub dropped: u64,
}

impl UdpLoss {
    /// What was counted after `earlier`.
    pub fn since(self, earlier: UdpLoss) -> UdpLoss {
        UdpLoss {
            seen: self.seen - earlier.seen,
            dropped: self.dropped - earlier.dropped,
        }
    }

    /// `dropped` as a percentage of `seen` (0 when nothing was seen).
    pub fn percent(self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            100.0 * self.dropped as f64 / self.seen as f64
        }
    }
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

/// Writes the relay key of the network key in `key` beside it, as
/// `lanbridge relay-key < net.key > relay.key` would.
pub fn relay_key_file(lab: &Lab, key: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(key).unwrap();
    let relay = RelayKey::derive(&NetworkKey::parse(&text).unwrap());
    let path = lab.dir().join("relay.key");
    std::fs::write(&path, relay.to_text() + "\n").unwrap();
    path
}

impl Overlay {
    /// Builds the underlay and starts a relay serving one network.
    pub fn new(lab: &Lab) -> Overlay {
        let inet = lab.switch("inet");
        let relay_ns = lab.ns("relay");
        let link = lab
            .plug(&relay_ns, "eth0", &inet, Some(&format!("{RELAY_IP}/24")))
            .unwrap();
        let links = vec![UnderlayLink {
            ns: relay_ns.clone(),
            ifname: "eth0".to_string(),
            port: link.peer,
        }];
        let key = key_file(lab, "net.key");
        let relay_key = relay_key_file(lab, &key);
        let relay = start_relay(&relay_ns, &relay_key);
        Overlay {
            inet,
            relay_ns,
            relay,
            key,
            relay_key,
            next_host: Cell::new(10),
            links: RefCell::new(links),
            lossy: Cell::new(false),
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
        let link = lab
            .plug(ns, ifname, &self.inet, Some(&format!("{ip}/24")))
            .unwrap();
        let link = UnderlayLink {
            ns: ns.clone(),
            ifname: ifname.to_string(),
            port: link.peer,
        };
        if self.lossy.get() {
            self.cut_udp_gso(&link);
        }
        self.links.borrow_mut().push(link);
        ip
    }

    /// Makes the underlay lossy, as a real path is: the internet switch
    /// drops `per_mille` in 1000 of the UDP datagrams it forwards, on every
    /// hop and in both directions (an nftables `numgen random` rule in its
    /// bridge's forward hook, counted: see [`Overlay::udp_loss`]). UDP GSO
    /// is cut on every underlay veth, now and plugged later, at both ends:
    /// a UDP GSO send otherwise crosses a veth and the switch as one skb,
    /// and the rule would drop the whole burst or none of it. Needs `nft`
    /// and `ethtool`.
    pub fn lose_udp(&self, per_mille: u16) {
        assert!(per_mille <= 1000, "lose_udp: {per_mille} per mille");
        self.lossy.set(true);
        for link in self.links.borrow().iter() {
            self.cut_udp_gso(link);
        }
        let rules = [
            format!("table bridge {LOSS_TABLE} {{"),
            "counter seen { }".into(),
            "counter dropped { }".into(),
            "chain forward {".into(),
            "type filter hook forward priority 0; policy accept;".into(),
            r#"meta l4proto udp counter name "seen""#.into(),
            format!(
                r#"meta l4proto udp numgen random mod 1000 < {per_mille} counter name "dropped" drop"#
            ),
            "}".into(),
            "}".into(),
        ]
        .join("\n");
        let sw = self.inet.ns();
        let file = sw.scratch_file("lbloss.nft");
        std::fs::write(&file, rules).unwrap();
        let out = sw.run("nft", &["-f", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "nft -f {} in {}: {}",
            file.display(),
            sw.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The counters of [`Overlay::lose_udp`]'s rule (zero before it ran).
    pub fn udp_loss(&self) -> UdpLoss {
        if !self.lossy.get() {
            return UdpLoss::default();
        }
        let packets = |counter: &str| {
            let out = self
                .inet
                .ns()
                .run("nft", &["list", "counter", "bridge", LOSS_TABLE, counter]);
            let text = String::from_utf8_lossy(&out.stdout);
            text.split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("nft counter {counter}: {text:?}"))
        };
        UdpLoss {
            seen: packets("seen"),
            dropped: packets("dropped"),
        }
    }

    /// `ethtool -K IFACE tx-udp-segmentation off` on both ends of `link`.
    fn cut_udp_gso(&self, link: &UnderlayLink) {
        for (ns, iface) in [(&link.ns, &link.ifname), (self.inet.ns(), &link.port)] {
            let out = ns.run("ethtool", &["-K", iface, "tx-udp-segmentation", "off"]);
            assert!(
                out.status.success(),
                "ethtool -K {iface} tx-udp-segmentation off in {}: {}",
                ns.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
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
        let mac = mac_for(cidr);
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
        start_edge_in(ns, &relay, key, cidr, mac, extra)
    }
}

/// The MAC the scenarios give the TAP at the IPv4 address of `cidr`:
/// `02:00:00:00:XX:YY` from its last two bytes (`None` without an IPv4
/// address: the kernel then picks one).
pub fn mac_for(cidr: Option<&str>) -> Option<String> {
    cidr.and_then(|c| c.split('/').next()?.parse::<std::net::Ipv4Addr>().ok())
        .map(|ip| {
            let o = ip.octets();
            format!("02:00:00:00:{:02x}:{:02x}", o[2], o[3])
        })
}

/// Starts `lanbridge edge -v --relay RELAY` with TAP `tap0` in the existing
/// namespace `ns` (which must reach `relay`, an `IP:PORT`), with optional
/// address and MAC and `extra` arguments; waits for the TAP.
pub fn start_edge_in(
    ns: Ns,
    relay: &str,
    key: &std::path::Path,
    cidr: Option<&str>,
    mac: Option<&str>,
    extra: &[&str],
) -> Edge {
    let mut args = vec![
        "edge",
        "-v",
        "--relay",
        relay,
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
    assert!(
        up,
        "edge {} made no tap0; its log:\n{}",
        ns.short(),
        proc.log()
    );
    let ip = cidr
        .map(|c| c.split('/').next().unwrap().to_string())
        .unwrap_or_default();
    Edge { ns, proc, ip }
}

/// Starts `lanbridge relay` in `ns` on the standard port.
pub fn start_relay(ns: &Ns, key: &std::path::Path) -> Proc {
    start_relay_with(ns, key, &[])
}

/// [`start_relay`] with `extra` arguments; waits until it runs.
pub fn start_relay_with(ns: &Ns, key: &std::path::Path, extra: &[&str]) -> Proc {
    start_relay_at(ns, &format!("{RELAY_IP}:{RELAY_PORT}"), key, extra)
}

/// [`start_relay_with`] listening on `listen` (`IP:PORT`) instead of the
/// standard address; waits until it runs.
pub fn start_relay_at(ns: &Ns, listen: &str, key: &std::path::Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "relay",
        "-v",
        "--listen",
        listen,
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

/// `ping` running in the background (`-i INTERVAL`), stopped with SIGINT to
/// read its summary.
pub struct Pinger {
    /// The `ping` process.
    pub proc: Proc,
    /// `FROM -> DST`, for messages.
    pub what: String,
}

impl Pinger {
    /// Starts pinging `dst` from `from` every `interval` seconds.
    pub fn start(from: &Ns, dst: &str, interval: &str) -> Pinger {
        let proc = from
            .spawn("ping", &["-n", "-i", interval, "-W", "1", dst])
            .unwrap();
        Pinger {
            proc,
            what: format!("{} -> {dst}", from.short()),
        }
    }

    /// Stops it; returns (transmitted, received).
    pub fn finish(self) -> (u32, u32) {
        self.proc.signal(Signal::SIGINT).unwrap_or_else(|e| {
            panic!("ping {} ended early: {e:#}\n{}", self.what, self.proc.log())
        });
        self.proc
            .wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("ping {} ignores SIGINT", self.what));
        let log = self.proc.log();
        let summary = log
            .lines()
            .find_map(|l| {
                let (sent, rest) = l.split_once(" packets transmitted, ")?;
                let received = rest.split_whitespace().next()?.parse().ok()?;
                Some((sent.trim().parse().ok()?, received))
            })
            .unwrap_or_else(|| panic!("no summary from ping {}:\n{log}", self.what));
        eprintln!(
            "ping {}: {} sent, {} answered",
            self.what, summary.0, summary.1
        );
        summary
    }
}
