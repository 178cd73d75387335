//! Direct paths between members through NAT routers (issue 11), judged from
//! outside the program: an nftables counter in the relay's namespace counts
//! the bytes the relay receives, TCP streams are compared by SHA-256, pings
//! count their replies, and `lanbridge status --json` shows the path each
//! member uses.
//!
//! ```text
//!                     [relay] eth0 203.0.113.1, lanbridge relay on :7171
//!                        |     (nft counter relay_in: UDP bytes to :7171)
//!                        |  203.0.113.254
//!                   +---------+
//!                   |  inet   |  router, ip_forward=1; scenario 2 drops UDP
//!                   +---------+  between nat1's and nat2's addresses here
//!            .6 /        | .10      \ .14          198.51.100.0/24, one /30 each
//!          wan .5     wan .9      wan .13
//!         [nat1]      [nat2]      [nat3]   masquerade (nat3: masquerade random)
//!      10.1.0.1    10.2.0.1    10.3.0.1    + WAN firewall: new from wan dropped
//!          |           |           |
//!      eth0 .2     wan0 .2     eth0 .2
//!        [e1]        [br]        [e2]      e1, e2: lanbridge edge, tap0
//!     tap0 .101     eth0 .2    tap0 .102   br: lanbridge bridge on eth0
//!                      |
//!               (lan switch) --- [l1] eth0 .11       LAN 192.168.50.0/24
//! ```
//!
//! Every NAT router masquerades what leaves by `wan` (endpoint-independent
//! mapping where ports allow; nat3, built only where needed, maps every
//! destination to a new port) and drops new connections coming in by
//! `wan`, as home routers do. The private networks are distinct (10.1,
//! 10.2, 10.3), so members reach each other only through the public
//! addresses of their NATs.
//!
//! Scenarios: the topology itself without lanbridge's help (NAT mappings,
//! hole punching by two plain sockets, the cut); 8 MB each way direct
//! between E1 and L1 (the relay receives under 10 %); falling back to the
//! relay when the internet cuts the direct path (pings at 10/s lose at most
//! 5 s worth); pings going on over the direct path with the relay killed;
//! E2 behind the port-randomising nat3 reaching everyone; and `--no-direct`
//! keeping everything on the relay.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{
    harness::{wait_until, Lab, Ns, Proc},
    lan::{
        assert_ping, lan_host, lan_ip, start_bridge, transfer_intact, BridgeHost, LanHost,
        LAN_PREFIX,
    },
    overlay::{
        key_file, mac_for, ping_count, relay_key_file, start_edge_in, start_relay_at, Edge, Pinger,
        RELAY_PORT,
    },
    status::status_value,
};

/// The relay's public address.
const RELAY_PUBLIC: &str = "203.0.113.1";
/// The relay's side of the internet router.
const INET_TO_RELAY: &str = "203.0.113.254";
/// The nftables table (inet family, in the relay's namespace) holding the
/// counter `relay_in` of the UDP bytes the relay receives.
const COUNT_TABLE: &str = "lbcount";
/// The nftables table (inet family, on the internet router) of
/// [`World::cut_udp`].
const CUT_TABLE: &str = "lbcut";
/// How long members may take to confirm a direct path once they talk.
const DIRECT_WITHIN: Duration = Duration::from_secs(10);
/// How long a member may take to report the relay path once the direct one
/// stops answering.
const FALLBACK_WITHIN: Duration = Duration::from_secs(10);
/// Bytes of each bulk transfer of scenario 1.
const BULK: usize = 8 << 20;
/// Bound of each bulk transfer.
const BULK_WAIT: Duration = Duration::from_secs(90);
/// Bytes of the small transfers.
const SMALL: usize = 1 << 20;
/// Bound of each small transfer.
const SMALL_WAIT: Duration = Duration::from_secs(30);
/// Ping interval of scenario 2, and the replies it may lose (5 s worth).
const PING_EVERY: &str = "0.1";
const MAX_LOST: u32 = 50;

/// How a NAT router picks the public port of a new mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mapping {
    /// `masquerade`: keeps the source port when it is free, for every
    /// destination (endpoint-independent mapping).
    KeepPort,
    /// `masquerade random`: a new random port per destination ("symmetric").
    Random,
}

/// A NAT router hung off the internet router.
struct Nat {
    /// Its namespace (`wan` to the internet, `lan` to the private side).
    ns: Ns,
    /// Its number `k`: public address `198.51.100.{4k+1}`, private network
    /// `10.k.0.0/24`.
    k: u8,
    /// Its public address.
    public: String,
}

impl Nat {
    /// Makes NAT router `k` in front of nothing yet, its `wan` a /30 to the
    /// internet router `inet`.
    fn new(lab: &Lab, inet: &Ns, k: u8, mapping: Mapping) -> Nat {
        let ns = lab.ns(&format!("nat{k}"));
        let public = format!("198.51.100.{}", 4 * k + 1);
        let upstream = format!("198.51.100.{}", 4 * k + 2);
        lab.veth(
            &ns,
            "wan",
            Some(&format!("{public}/30")),
            inet,
            &format!("nat{k}"),
            Some(&format!("{upstream}/30")),
        )
        .unwrap_or_else(|e| panic!("nat{k} wan: {e:#}"));
        ns.ip(&["route", "add", "default", "via", &upstream]);
        ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
        let masquerade = match mapping {
            Mapping::KeepPort => "masquerade",
            Mapping::Random => "masquerade random",
        };
        // The WAN input firewall every home router has. An unsolicited
        // inbound UDP datagram to the router itself (a peer's hole-punching
        // probe arriving before our own member has sent anything its way)
        // must be dropped BEFORE conntrack confirms it: otherwise Linux
        // conntrack keeps a stale entry for that tuple, the router then
        // picks a different source port when our member sends to that
        // peer, and hole punching breaks. A filter at priority 0 of the
        // input hook drops it before the confirmation at the end of input.
        // (Checked: with `accept` there, the plain sockets of the topology
        // test no longer punch a hole.) Forwarded new connections from the
        // WAN are dropped too.
        nft(
            &ns,
            &format!(
                "table ip lbnat {{
                    chain postrouting {{
                        type nat hook postrouting priority srcnat; policy accept;
                        oifname \"wan\" {masquerade}
                    }}
                }}
                table inet fw {{
                    chain input {{
                        type filter hook input priority 0; policy accept;
                        iifname \"wan\" ct state new drop
                    }}
                    chain forward {{
                        type filter hook forward priority 0; policy accept;
                        iifname \"wan\" ct state new drop
                    }}
                }}"
            ),
        );
        Nat { ns, k, public }
    }

    /// Puts `ns` behind this router: a veth from the router's `lan`
    /// (`10.k.0.1/24`) to `ifname` in `ns` (`10.k.0.2/24`), the default
    /// route of `ns` through it. One host per router.
    fn attach(&self, lab: &Lab, ns: &Ns, ifname: &str) {
        let k = self.k;
        let gateway = format!("10.{k}.0.1");
        lab.veth(
            &self.ns,
            "lan",
            Some(&format!("{gateway}/24")),
            ns,
            ifname,
            Some(&format!("10.{k}.0.2/24")),
        )
        .unwrap_or_else(|e| panic!("behind nat{k}: {e:#}"));
        ns.ip(&["route", "add", "default", "via", &gateway]);
    }
}

/// Loads the nftables `rules` in `ns` (`nft -f`); panics with nft's error.
fn nft(ns: &Ns, rules: &str) {
    let file = ns.scratch_file("rules.nft");
    std::fs::write(&file, rules).unwrap();
    let out = ns.run("nft", &["-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "nft -f {} in {}: {}",
        file.display(),
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads the named counter `name` of the inet table `table` in `ns` with
/// `nft -j`: (packets, bytes).
fn nft_counter(ns: &Ns, table: &str, name: &str) -> (u64, u64) {
    let out = ns.run("nft", &["-j", "list", "counter", "inet", table, name]);
    assert!(
        out.status.success(),
        "nft list counter {table} {name} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nft -j: {e}: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    });
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| {
            let c = &o["counter"];
            Some((c["packets"].as_u64()?, c["bytes"].as_u64()?))
        })
        .unwrap_or_else(|| panic!("no counter {name} in {json}"))
}

/// The common topology: internet router, relay, nat1 with edge E1 behind
/// it, nat2 with the bridge host BR behind it and LAN host L1 on BR's LAN.
struct World {
    /// The internet router.
    inet: Ns,
    /// The relay's namespace (where [`COUNT_TABLE`] counts).
    relay_ns: Ns,
    /// The relay's `IP:PORT`.
    relay: String,
    /// The relay process.
    relay_proc: Proc,
    /// The network key file.
    key: PathBuf,
    nat1: Nat,
    nat2: Nat,
    /// The edge behind nat1, at `lan_ip(101)`.
    e1: Edge,
    /// The LAN host on the bridge's LAN, at `lan_ip(11)`.
    l1: LanHost,
    /// The bridge host behind nat2, its NIC `eth0` at `lan_ip(2)`.
    br: BridgeHost,
}

impl World {
    /// Builds the topology and starts the relay, the edge and the bridge,
    /// both members with `extra` arguments.
    fn new(lab: &Lab, extra: &[&str]) -> World {
        let inet = lab.ns("inet");
        inet.sysctl("net.ipv4.ip_forward", "1").unwrap();
        let relay_ns = lab.ns("relay");
        lab.veth(
            &inet,
            "relay",
            Some(&format!("{INET_TO_RELAY}/24")),
            &relay_ns,
            "eth0",
            Some(&format!("{RELAY_PUBLIC}/24")),
        )
        .unwrap_or_else(|e| panic!("relay link: {e:#}"));
        relay_ns.ip(&["route", "add", "default", "via", INET_TO_RELAY]);
        nft(
            &relay_ns,
            &format!(
                "table inet {COUNT_TABLE} {{
                    counter relay_in {{ }}
                    chain input {{
                        type filter hook input priority 0; policy accept;
                        udp dport {RELAY_PORT} counter name \"relay_in\"
                    }}
                }}"
            ),
        );
        let key = key_file(lab, "net.key");
        let relay = format!("{RELAY_PUBLIC}:{RELAY_PORT}");
        let relay_proc = start_relay_at(&relay_ns, &relay, &relay_key_file(lab, &key), &[]);

        let nat1 = Nat::new(lab, &inet, 1, Mapping::KeepPort);
        let nat2 = Nat::new(lab, &inet, 2, Mapping::KeepPort);

        let lan = lab.switch("lan");
        let l1 = lan_host(lab, &lan, "l1", &lan_ip(11));
        let host = lan_host(lab, &lan, "br", &lan_ip(2));
        nat2.attach(lab, &host.ns, "wan0");
        let mut args = vec!["--relay", &relay, "--key-file", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        let proc = start_bridge(&host.ns, &args);
        let br = BridgeHost { host, proc };

        let e1 = edge_behind(lab, &relay, &key, &nat1, "e1", 101, extra);
        World {
            inet,
            relay_ns,
            relay,
            relay_proc,
            key,
            nat1,
            nat2,
            e1,
            l1,
            br,
        }
    }

    /// An edge `short` in a new namespace behind `nat`, its `tap0` at
    /// `lan_ip(n)` in the bridged LAN's subnet.
    fn edge_behind(&self, lab: &Lab, nat: &Nat, short: &str, n: u8, extra: &[&str]) -> Edge {
        edge_behind(lab, &self.relay, &self.key, nat, short, n, extra)
    }

    /// Bytes of UDP to the relay's port that its namespace received so far
    /// (IP headers included).
    fn relay_bytes(&self) -> u64 {
        nft_counter(&self.relay_ns, COUNT_TABLE, "relay_in").1
    }

    /// Makes the internet router drop every UDP datagram between the public
    /// addresses of `a` and `b`, both ways (traffic to and from the relay
    /// passes); counted, see [`World::cut_dropped`].
    fn cut_udp(&self, a: &Nat, b: &Nat) {
        let (a, b) = (&a.public, &b.public);
        nft(
            &self.inet,
            &format!(
                "table inet {CUT_TABLE} {{
                    counter dropped {{ }}
                    chain forward {{
                        type filter hook forward priority 0; policy accept;
                        ip saddr {a} ip daddr {b} meta l4proto udp counter name \"dropped\" drop
                        ip saddr {b} ip daddr {a} meta l4proto udp counter name \"dropped\" drop
                    }}
                }}"
            ),
        );
    }

    /// Datagrams [`World::cut_udp`]'s rules dropped.
    fn cut_dropped(&self) -> u64 {
        nft_counter(&self.inet, CUT_TABLE, "dropped").0
    }
}

/// Starts an edge of the network of `key` (relay at `relay`) in a new
/// namespace `short` behind `nat`, its `tap0` at `lan_ip(n)`.
fn edge_behind(
    lab: &Lab,
    relay: &str,
    key: &Path,
    nat: &Nat,
    short: &str,
    n: u8,
    extra: &[&str],
) -> Edge {
    let ns = lab.ns(short);
    nat.attach(lab, &ns, "eth0");
    let cidr = format!("{}/{LAN_PREFIX}", lan_ip(n));
    let mac = mac_for(Some(&cidr));
    start_edge_in(ns, relay, key, Some(&cidr), mac.as_deref(), extra)
}

/// The `uplink` object of a member's status (edge or bridge).
fn uplink(status: &Value) -> &Value {
    if status["edge"].is_object() {
        &status["edge"]["uplink"]
    } else {
        &status["bridge"]["uplink"]
    }
}

/// The member id of the member running in `ns`.
fn member_id(ns: &Ns) -> String {
    let status = status_value(ns);
    uplink(&status)["member"]
        .as_str()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no member id in the status of {}: {status}", ns.name()))
        .to_string()
}

/// What a member's `status --json` says of its path to another member
/// (fields of `uplink.members[]`; `None` where absent or null).
#[derive(Clone, Debug, Default)]
struct PathView {
    /// `"direct"` or `"relay"`.
    path: Option<String>,
    /// The direct path's `IP:PORT`.
    address: Option<String>,
    rtt_ms: Option<f64>,
    changed_seconds: Option<f64>,
}

impl PathView {
    fn is(&self, path: &str) -> bool {
        self.path.as_deref() == Some(path)
    }

    /// The IP of [`PathView::address`].
    fn ip(&self) -> Option<&str> {
        Some(self.address.as_deref()?.rsplit_once(':')?.0)
    }
}

/// The path the member in `ns` reports to the member `peer` (`None` if
/// it does not list `peer`).
fn path_to(ns: &Ns, peer: &str) -> Option<PathView> {
    let status = status_value(ns);
    let member = uplink(&status)["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"].as_str() == Some(peer))?;
    let text = |k: &str| member[k].as_str().map(str::to_string);
    Some(PathView {
        path: text("path"),
        address: text("path_address"),
        rtt_ms: member["path_rtt_ms"].as_f64(),
        changed_seconds: member["path_changed_seconds"].as_f64(),
    })
}

/// Polls the status of the member in `ns` (every 0.2 s) until its path to
/// `peer` is `want` or `timeout` passes; returns whether it got there, the
/// time taken and the last view.
fn wait_for_path(
    ns: &Ns,
    peer: &str,
    want: &str,
    timeout: Duration,
) -> (bool, Duration, Option<PathView>) {
    let start = Instant::now();
    let mut last = None;
    let got = wait_until(timeout, || {
        last = path_to(ns, peer);
        let there = last.as_ref().is_some_and(|p| p.is(want));
        if !there {
            std::thread::sleep(Duration::from_millis(200));
        }
        there
    });
    (got, start.elapsed(), last)
}

/// Asserts that the member in `ns` reports a direct path to `peer` at the
/// public address of `nat`, with an RTT and the time it last changed.
fn assert_direct_via(lab: &Lab, ns: &Ns, peer: &str, nat: &Nat) {
    let view = path_to(ns, peer);
    eprintln!("{}: path to {peer}: {view:?}", ns.short());
    let ok = view.as_ref().is_some_and(|v| {
        v.is("direct")
            && v.ip() == Some(&nat.public)
            && v.rtt_ms.is_some()
            && v.changed_seconds.is_some()
    });
    assert!(
        ok,
        "{} reports {view:?} for {peer}, want a direct path at {}:PORT with an RTT and a \
         change time\n{}",
        ns.short(),
        nat.public,
        lab.logs()
    );
}

/// Replies a running `ping` has printed so far.
fn replies(pinger: &Pinger) -> usize {
    pinger
        .proc
        .log()
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .count()
}

/// A UDP socket bound to `ip`:`port` (`port` 0: any) in `ns`, reads
/// timing out after 2 s. It stays in `ns` wherever it is used from.
fn udp_socket(ns: &Ns, ip: &str, port: u16) -> UdpSocket {
    ns.enter(|| {
        let sock = UdpSocket::bind((ip, port))?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(sock)
    })
    .unwrap_or_else(|e| panic!("udp socket {ip}:{port} in {}: {e:#}", ns.name()))
}

/// The next datagram `sock` receives within its timeout: (payload, source).
fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    Some((buf[..n].to_vec(), from))
}

/// The public address under which `sock`'s datagram to `probe` arrives.
fn public_addr(sock: &UdpSocket, probe: &UdpSocket) -> SocketAddr {
    sock.send_to(b"where am I?", probe.local_addr().unwrap())
        .unwrap();
    recv(probe).expect("the probe got nothing").1
}

/// Checks the topology without lanbridge's help (the members run, but on
/// other ports): nat1 and nat2 keep one public port for every destination
/// and nat3 does not; two plain UDP sockets behind nat1 and nat2 punch a
/// hole to each other the way members are meant to (the first datagram is
/// dropped by the far router's WAN firewall, the answer to it opens both
/// ways); once the internet router cuts UDP between the two NATs, the hole
/// is closed while the relay's address still answers; and E1 pings L1
/// across both NATs through the relay.
#[test]
fn the_nat_routers_behave_as_home_routers_and_let_sockets_punch_holes() {
    let Some(lab) = Lab::new("direct_topology") else {
        return;
    };
    let start = Instant::now();
    let w = World::new(&lab, &[]);
    let nat3 = Nat::new(&lab, &w.inet, 3, Mapping::Random);
    let e3 = lab.ns("e3");
    nat3.attach(&lab, &e3, "eth0");
    assert_ping(&lab, &w.e1.ns, &w.l1.ip);

    let probes = [5601, 5602].map(|port| udp_socket(&w.relay_ns, RELAY_PUBLIC, port));
    for (ns, nat) in [(&w.e1.ns, &w.nat1), (&w.br.host.ns, &w.nat2), (&e3, &nat3)] {
        let sock = udp_socket(ns, "0.0.0.0", 0);
        let seen = probes.each_ref().map(|p| public_addr(&sock, p));
        eprintln!(
            "direct_topology: behind {}: one socket seen as {seen:?}",
            ns.short()
        );
        assert!(
            seen.iter().all(|a| a.ip().to_string() == nat.public),
            "not masqueraded to {}: {seen:?}",
            nat.public
        );
        let same = seen[0] == seen[1];
        assert_eq!(
            same,
            nat.k != 3,
            "nat{} maps one socket to {seen:?} for two destinations",
            nat.k
        );
    }

    let a = udp_socket(&w.e1.ns, "0.0.0.0", 0);
    let b = udp_socket(&w.br.host.ns, "0.0.0.0", 0);
    let (pa, pb) = (public_addr(&a, &probes[0]), public_addr(&b, &probes[0]));
    a.send_to(b"a1", pb).unwrap();
    b.send_to(b"b1", pa).unwrap();
    let got_a = recv(&a);
    a.send_to(b"a2", pb).unwrap();
    let got_b = recv(&b);
    eprintln!("direct_topology: punching {pa} <-> {pb}: A got {got_a:?}, B got {got_b:?}");
    assert_eq!(
        got_a,
        Some((b"b1".to_vec(), pb)),
        "B's answer did not reach A"
    );
    assert_eq!(
        got_b,
        Some((b"a2".to_vec(), pa)),
        "A's second datagram did not reach B"
    );

    w.cut_udp(&w.nat1, &w.nat2);
    a.send_to(b"a3", pb).unwrap();
    assert_eq!(recv(&b), None, "the cut lets UDP from nat1 to nat2 through");
    assert_eq!(
        public_addr(&a, &probes[0]),
        pa,
        "the cut stops UDP to the relay"
    );
    assert!(w.cut_dropped() > 0, "the cut counted nothing");
    eprintln!("direct_topology: {:.2?} in all", start.elapsed());
}

/// E1 behind nat1 and L1 behind nat2's bridge find a direct path within a
/// few seconds of talking; then 8 MB of TCP each way arrive intact while
/// the relay's namespace receives under 10 % of the bytes moved, and both
/// members report the direct path at the other's NAT.
#[test]
fn direct_path_through_two_nats_carries_bulk_tcp() {
    let Some(lab) = Lab::new("direct_bulk") else {
        return;
    };
    let start = Instant::now();
    let w = World::new(&lab, &[]);
    assert_ping(&lab, &w.e1.ns, &w.l1.ip);
    assert_ping(&lab, &w.l1.ns, &w.e1.ip);
    let (e1_id, br_id) = (member_id(&w.e1.ns), member_id(&w.br.host.ns));
    let (direct, took, view) = wait_for_path(&w.e1.ns, &br_id, "direct", DIRECT_WITHIN);
    eprintln!("direct_bulk: E1's path to BR after {took:.1?} (direct: {direct}): {view:?}");

    let before = w.relay_bytes();
    let (e1, l1) = (&w.e1, &w.l1);
    transfer_intact(
        &lab, "E1 -> L1", &e1.ns, &l1.ns, &l1.ip, 5001, BULK, 1, BULK_WAIT,
    );
    transfer_intact(
        &lab, "L1 -> E1", &l1.ns, &e1.ns, &e1.ip, 5002, BULK, 2, BULK_WAIT,
    );
    let relayed = w.relay_bytes() - before;
    let moved = 2 * BULK as u64;
    eprintln!(
        "direct_bulk: the relay's namespace received {relayed} bytes while {moved} bytes of \
         TCP moved ({:.2} %)",
        100.0 * relayed as f64 / moved as f64
    );
    assert!(
        relayed * 10 < moved,
        "the relay received {relayed} bytes for {moved} moved (10 % allowed): not a direct path\n{}",
        lab.logs()
    );
    assert_direct_via(&lab, &w.e1.ns, &br_id, &w.nat2);
    assert_direct_via(&lab, &w.br.host.ns, &e1_id, &w.nat1);
    eprintln!("direct_bulk: {:.2?} in all", start.elapsed());
}

/// Once E1 and the bridge talk directly, the internet starts dropping UDP
/// between nat1 and nat2: pings every 0.1 s from E1 to L1 lose at most 5 s
/// worth, E1 reports the relay path, and a new 1 MB transfer arrives intact
/// through the relay.
#[test]
fn a_direct_path_that_stops_answering_falls_back_to_the_relay() {
    let Some(lab) = Lab::new("direct_fallback") else {
        return;
    };
    let start = Instant::now();
    let w = World::new(&lab, &[]);
    assert_ping(&lab, &w.e1.ns, &w.l1.ip);
    let br_id = member_id(&w.br.host.ns);
    let (direct, took, view) = wait_for_path(&w.e1.ns, &br_id, "direct", DIRECT_WITHIN);
    assert!(
        direct,
        "no direct path from E1 to BR within {DIRECT_WITHIN:?}: {view:?}\n{}",
        lab.logs()
    );
    eprintln!("direct_fallback: direct after {took:.1?}: {view:?}");

    // About 5 s of pings over the direct path, then the cut.
    let pinger = Pinger::start(&w.e1.ns, &w.l1.ip, PING_EVERY);
    wait_until(Duration::from_secs(15), || replies(&pinger) >= 50);
    let before_cut = replies(&pinger);
    w.cut_udp(&w.nat1, &w.nat2);
    let (fell_back, took, view) = wait_for_path(&w.e1.ns, &br_id, "relay", FALLBACK_WITHIN);
    eprintln!(
        "direct_fallback: {before_cut} replies before the cut; E1's path after {took:.1?} \
         (relay: {fell_back}): {view:?}"
    );
    // About 5 s more of pings, through the relay if all went well.
    let after = replies(&pinger);
    wait_until(Duration::from_secs(15), || replies(&pinger) >= after + 50);
    let (sent, received) = pinger.finish();
    let cut = w.cut_dropped();
    eprintln!("direct_fallback: the cut dropped {cut} datagrams");
    assert!(
        cut > 0,
        "the cut between nat1 and nat2 dropped nothing: no direct path was in use\n{}",
        lab.logs()
    );
    assert!(
        sent - received <= MAX_LOST && received >= before_cut as u32 + 50,
        "ping E1 -> L1: {received} of {sent} answered, at most {MAX_LOST} lost and 50 answered \
         after the fallback expected\n{}",
        lab.logs()
    );
    assert!(
        fell_back,
        "E1 still reports {view:?} for BR {FALLBACK_WITHIN:?} after its direct path was cut\n{}",
        lab.logs()
    );

    let before = w.relay_bytes();
    let (e1, l1) = (&w.e1, &w.l1);
    transfer_intact(
        &lab, "E1 -> L1", &e1.ns, &l1.ns, &l1.ip, 5003, SMALL, 3, SMALL_WAIT,
    );
    let relayed = w.relay_bytes() - before;
    eprintln!("direct_fallback: the relay received {relayed} bytes for {SMALL} moved");
    assert!(
        relayed >= SMALL as u64,
        "the relay received {relayed} bytes for {SMALL} moved after the cut\n{}",
        lab.logs()
    );
    eprintln!("direct_fallback: {:.2?} in all", start.elapsed());
}

/// Once E1 and the bridge talk directly, the relay is killed: pings every
/// 0.1 s from E1 to L1 go on for 20 s (past the 15 s after which members
/// declare the relay lost) with at most a few lost, and E1 still reports the
/// direct path.
#[test]
fn members_on_a_direct_path_keep_talking_while_the_relay_is_down() {
    let Some(lab) = Lab::new("direct_relay_down") else {
        return;
    };
    let start = Instant::now();
    let w = World::new(&lab, &[]);
    assert_ping(&lab, &w.e1.ns, &w.l1.ip);
    let br_id = member_id(&w.br.host.ns);
    let (direct, _, view) = wait_for_path(&w.e1.ns, &br_id, "direct", DIRECT_WITHIN);
    assert!(
        direct,
        "no direct path from E1 to BR within {DIRECT_WITHIN:?}: {view:?}\n{}",
        lab.logs()
    );
    let pinger = Pinger::start(&w.e1.ns, &w.l1.ip, PING_EVERY);
    wait_until(Duration::from_secs(15), || replies(&pinger) >= 10);
    w.relay_proc.signal(Signal::SIGKILL).unwrap();
    w.relay_proc
        .wait_timeout(Duration::from_secs(5))
        .expect("relay did not die");
    let killed = replies(&pinger);
    wait_until(Duration::from_secs(30), || replies(&pinger) >= killed + 200);
    let (sent, received) = pinger.finish();
    let view = path_to(&w.e1.ns, &br_id);
    let still = view.as_ref().is_some_and(|p| p.is("direct"));
    eprintln!(
        "direct_relay_down: {received} of {sent} pings answered, {} after the relay died; \
         E1's path: {view:?}",
        received as usize - killed
    );
    assert!(
        received as usize >= killed + 200 && sent - received <= 5,
        "ping E1 -> L1 with the relay dead: {received} of {sent} answered, {killed} before it \
         died\n{}",
        lab.logs()
    );
    assert!(
        still,
        "E1 reports {view:?} for BR with the relay dead\n{}",
        lab.logs()
    );
    eprintln!("direct_relay_down: {:.2?} in all", start.elapsed());
}

/// A second edge E2 behind nat3, which maps every destination to a new
/// port, pings E1 and L1 and is pinged by them, and 1 MB of TCP crosses
/// intact between it and each of them, both ways.
#[test]
fn a_member_behind_a_port_randomising_nat_reaches_everyone() {
    let Some(lab) = Lab::new("direct_symmetric") else {
        return;
    };
    let start = Instant::now();
    let w = World::new(&lab, &[]);
    let nat3 = Nat::new(&lab, &w.inet, 3, Mapping::Random);
    let e2 = w.edge_behind(&lab, &nat3, "e2", 102, &[]);
    let (e1, l1) = (&w.e1, &w.l1);
    for (from, to) in [
        (&e2.ns, &e1.ip),
        (&e2.ns, &l1.ip),
        (&e1.ns, &e2.ip),
        (&l1.ns, &e2.ip),
    ] {
        assert_ping(&lab, from, to);
    }
    transfer_intact(
        &lab, "E2 -> E1", &e2.ns, &e1.ns, &e1.ip, 5001, SMALL, 1, SMALL_WAIT,
    );
    transfer_intact(
        &lab, "E2 -> L1", &e2.ns, &l1.ns, &l1.ip, 5002, SMALL, 2, SMALL_WAIT,
    );
    transfer_intact(
        &lab, "E1 -> E2", &e1.ns, &e2.ns, &e2.ip, 5003, SMALL, 3, SMALL_WAIT,
    );
    transfer_intact(
        &lab, "L1 -> E2", &l1.ns, &e2.ns, &e2.ip, 5004, SMALL, 4, SMALL_WAIT,
    );
    for (ns, peer) in [(&e2.ns, &w.e1.ns), (&e2.ns, &w.br.host.ns)] {
        let id = member_id(peer);
        eprintln!(
            "direct_symmetric: {}'s path to {}: {:?}",
            ns.short(),
            peer.short(),
            path_to(ns, &id)
        );
    }
    eprintln!("direct_symmetric: {:.2?} in all", start.elapsed());
}

/// With `--no-direct` on both members, after 3 s of pings 2 MB of TCP
/// arrive intact, all through the relay: its namespace receives at least
/// the bytes moved, and both members report the relay path.
#[test]
fn no_direct_keeps_everything_on_the_relay() {
    let Some(lab) = Lab::new("direct_off") else {
        return;
    };
    let start = Instant::now();
    let w = World::new(&lab, &["--no-direct"]);
    assert_ping(&lab, &w.e1.ns, &w.l1.ip);
    // 3 s of traffic, in which a direct path would have been found.
    let answered = ping_count(&w.e1.ns, &w.l1.ip, 60, &[]);
    eprintln!("direct_off: {answered} of 60 pings answered");

    let len = 2 * SMALL;
    let before = w.relay_bytes();
    let (e1, l1) = (&w.e1, &w.l1);
    transfer_intact(
        &lab, "E1 -> L1", &e1.ns, &l1.ns, &l1.ip, 5001, len, 1, SMALL_WAIT,
    );
    let relayed = w.relay_bytes() - before;
    eprintln!(
        "direct_off: the relay's namespace received {relayed} bytes for {len} moved ({:.1} %)",
        100.0 * relayed as f64 / len as f64
    );
    assert!(
        relayed >= len as u64,
        "the relay received {relayed} bytes for {len} moved with --no-direct\n{}",
        lab.logs()
    );
    let (e1_id, br_id) = (member_id(&w.e1.ns), member_id(&w.br.host.ns));
    for (ns, peer) in [(&w.e1.ns, &br_id), (&w.br.host.ns, &e1_id)] {
        let view = path_to(ns, peer);
        assert!(
            view.as_ref().is_some_and(|v| v.is("relay")),
            "{} reports {view:?} for {peer} with --no-direct, want the relay path",
            ns.short()
        );
    }
    eprintln!("direct_off: {:.2?} in all", start.elapsed());
}
