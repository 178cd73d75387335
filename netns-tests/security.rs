//! The attacks of issue 10 against protocol version 2, in namespaces with
//! the real relay, edges and bridge, judged from outside (captures on TAPs,
//! on the LAN and at the relay; ping; `ip neigh`; SHA-256 of TCP streams):
//! - a recording of a member, replayed after it left (to the relay it knew,
//!   to a restarted relay, and once the relay, the other edge and the
//!   bridge all restarted with their identities; from its address and from
//!   another), reaches no TAP and no LAN;
//! - a relay given only the relay key (`lanbridge relay-key`) carries edges
//!   and a bridge, and its key file does not hold the network key;
//! - an edge given the relay key refuses to start, and one given the relay
//!   key's hex as a network key reaches nobody and puts nothing on the LAN;
//! - a member taking another's MAC, forging datagrams under another's relay
//!   session, or forging frames under another's member session (through its
//!   own uplink), changes nothing for the others;
//! - a member flooding 10000 new source MACs changes nothing for the others
//!   (nor for a member joining after it), and the LAN still sees only the
//!   bridge NIC's MAC;
//! - keys rotating every 2 s during long TCP transfers lose no byte, and the
//!   rotations are visible at the relay;
//! - a member whose public key the relay refuses (`--refuse-member`)
//!   reaches nobody, while the same host with a new identity still joins.
//!
//! What the tests rely on of the version 2 wire format (docs/protocol.md):
//! every datagram is UDP to the relay's port, byte 0 is the version (2),
//! byte 1 the kind ([`kind`]); a routed datagram (kinds 5 to 7) from a member
//! carries the relay's receiver index of the sender's uplink session in
//! bytes 4..8, a counter in 8..16, the destination member id in 16..24 and
//! then the inner message (for Data: the destination's receiver index, a
//! counter, the sealed frame), and ends with a 16-byte relay tag.
//!
//! Captures at the relay need one datagram per packet, so the scenarios
//! that read them cut UDP segmentation offload on every underlay NIC
//! ([`Gso::Cut`]): the kernel then segments a GSO burst before it leaves
//! the sender. Attack traffic is made with Python (scapy, or plain sockets)
//! run as `/usr/bin/python3`, Debian's, which has scapy (see guard.rs).
//! Every wait ends on an event within a bound; the only fixed waits are the
//! quiet periods in which nothing may arrive, and the pacing of the long
//! transfers.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use lanbridge::core::mac::MacAddr;

use crate::{
    harness::{lanbridge_bin, wait_until, Capture, Frame, Lab, Ns, Proc, Switch},
    lan::{
        assert_ping, diff_bytes, lan_host, lan_ip, pseudo_random, sha256, start_bridge,
        transfer_intact, LanHost, SETTLE,
    },
    overlay::{
        ping_count, ping_within, start_relay, start_relay_with, Overlay, Pinger, RELAY_IP,
        RELAY_PORT,
    },
};

/// The Python that has scapy (Debian's; a pyenv `python3` may not).
const PYTHON: &str = "/usr/bin/python3";

/// The protocol version in byte 0 of every version 2 datagram.
const V2: u8 = 2;

/// Datagram kinds (byte 1).
mod kind {
    /// Member → relay: Noise message 1 of the uplink handshake.
    pub const UPLINK_INIT: u8 = 1;
    /// Relay → member: Noise message 2 of the uplink handshake.
    pub const UPLINK_RESP: u8 = 2;
    /// Relay → member: a cookie, under load.
    pub const COOKIE_REPLY: u8 = 3;
    /// Member ↔ member: Noise message 1 of a member session, routed.
    pub const PEER_INIT: u8 = 5;
    /// Member ↔ member: Noise message 2 of a member session, routed.
    pub const PEER_RESP: u8 = 6;
    /// Member ↔ member: frames, routed.
    pub const DATA: u8 = 7;
}

/// Byte ranges of a routed datagram from a member to the relay.
mod routed {
    use std::ops::Range;

    /// The relay's receiver index of the sender's uplink session.
    pub const RELAY_INDEX: Range<usize> = 4..8;
    /// The uplink counter.
    pub const COUNTER: Range<usize> = 8..16;
    /// The destination member id.
    pub const DEST: Range<usize> = 16..24;
    /// Of a Data datagram: the destination's receiver index of the member
    /// session (the first field of the inner message).
    pub const INNER_INDEX: Range<usize> = 24..28;
}

/// How long a member, a counter or a capture may take to show something.
const EVENT: Duration = Duration::from_secs(20);
/// How long after a replay or an attack nothing may arrive.
const QUIET: Duration = Duration::from_secs(2);
/// How long members may take to find a restarted relay again.
const RECONNECT: Duration = Duration::from_secs(30);
/// Pings a background pinger may lose while it is attacked (the last one,
/// in flight when it is stopped, included).
const MAX_LOST: u32 = 3;
/// The pattern of the marked pings (`ping -p`), as hex and as bytes.
const MARK_HEX: &str = "5ec0de01a11ce55afeedface0badf00d";
const MARK: [u8; 16] = [
    0x5e, 0xc0, 0xde, 0x01, 0xa1, 0x1c, 0xe5, 0x5a, 0xfe, 0xed, 0xfa, 0xce, 0x0b, 0xad, 0xf0, 0x0d,
];
/// A second pattern, for pings that must get through (the captures' proof
/// that they see traffic).
const CONTROL_HEX: &str = "c0ffee02c0ffee02c0ffee02c0ffee02";
const CONTROL: [u8; 16] = [
    0xc0, 0xff, 0xee, 0x02, 0xc0, 0xff, 0xee, 0x02, 0xc0, 0xff, 0xee, 0x02, 0xc0, 0xff, 0xee, 0x02,
];

/// Whether the underlay NICs keep UDP segmentation offload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gso {
    /// As users run it.
    Keep,
    /// Cut on every underlay NIC (sender side), so that a capture at the
    /// relay sees each datagram as one packet.
    Cut,
}

/// A member: an edge, or the bridge (whose `ip` and `mac` are its NIC's).
struct Member {
    /// Its namespace (`tap0` for an edge, `eth0` and `wan0` for the bridge).
    ns: Ns,
    /// The `lanbridge` process.
    proc: Proc,
    /// Its address in the LAN's subnet, without prefix.
    ip: String,
    /// The MAC of `tap0` (an edge) or of `eth0` (the bridge).
    mac: MacAddr,
    /// Its underlay address: the source of its datagrams at the relay.
    wan: Ipv4Addr,
    /// How to start it again.
    relaunch: Relaunch,
}

/// What [`Member::restart`] needs.
enum Relaunch {
    /// `lanbridge edge` with this key file and these extra arguments.
    Edge { key: PathBuf, extra: Vec<String> },
    /// `lanbridge bridge` ([`start_bridge`]) with these arguments.
    Bridge { args: Vec<String> },
}

impl Member {
    /// Stops it (SIGTERM; it must exit 0) and starts it again with the same
    /// arguments, as a new process.
    fn restart(&mut self) {
        let status = self.proc.stop(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} stopped with {status:?}:\n{}",
            self.ns.short(),
            self.proc.log()
        );
        self.proc = match &self.relaunch {
            Relaunch::Edge { key, extra } => {
                let proc = spawn_edge(&self.ns, key, &self.ip, self.mac, &strs(extra));
                wait_for_tap(&self.ns, &proc);
                proc
            }
            Relaunch::Bridge { args } => start_bridge(&self.ns, &strs(args)),
        };
    }
}

/// A LAN with host L1 and a bridge member, joined to an [`Overlay`].
struct BridgedLan {
    lan: Switch,
    l1: LanHost,
    bridge: Member,
}

/// `ethtool -K IFACE FEATURE off ...` in `ns`; panics on failure.
fn ethtool_off(ns: &Ns, iface: &str, features: &[&str]) {
    let mut args = vec!["-K", iface];
    for f in features {
        args.extend([*f, "off"]);
    }
    let out = ns.run("ethtool", &args);
    assert!(
        out.status.success(),
        "ethtool {} in {}: {}",
        args.join(" "),
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies `gso` to `iface` in `ns`.
fn underlay_gso(ns: &Ns, iface: &str, gso: Gso) {
    if gso == Gso::Cut {
        ethtool_off(ns, iface, &["tx-udp-segmentation"]);
    }
}

/// Runs `lanbridge ARGS...` here (no namespace needed) with `stdin` as its
/// standard input.
fn lanbridge_with_stdin(args: &[&str], stdin: &Path) -> Output {
    let input = std::fs::File::open(stdin).unwrap_or_else(|e| panic!("{}: {e}", stdin.display()));
    Command::new(lanbridge_bin())
        .args(args)
        .stdin(Stdio::from(input))
        .output()
        .unwrap_or_else(|e| panic!("lanbridge {}: {e}", args.join(" ")))
}

/// Writes `relay.key` into the lab directory with `lanbridge relay-key <
/// KEY`, after checking what it printed: one line, `relay-key:` and 64 hex
/// characters.
fn relay_key_file(lab: &Lab, key: &Path) -> PathBuf {
    let out = lanbridge_with_stdin(&["relay-key"], key);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "lanbridge relay-key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = text
        .trim()
        .strip_prefix("relay-key:")
        .unwrap_or_else(|| panic!("relay-key printed {text:?}, not relay-key:<64 hex>"));
    assert!(
        text.trim().lines().count() == 1
            && hex.len() == 64
            && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "relay-key printed {text:?}, not one line relay-key:<64 hex>"
    );
    let path = lab.dir().join("relay.key");
    std::fs::write(&path, text).unwrap();
    path
}

/// The network key file's 64 hex characters, lower case.
fn key_hex(key: &Path) -> String {
    std::fs::read_to_string(key).unwrap().trim().to_lowercase()
}

/// An underlay and a relay. With `relay_key_only` the relay runs with the
/// relay key alone (the one [`Overlay::new`] starts with the network key is
/// stopped before any member exists). Returns the overlay and the relay
/// key file.
fn overlay(lab: &Lab, relay_key_only: bool, gso: Gso) -> (Overlay, PathBuf) {
    let mut net = Overlay::new(lab);
    underlay_gso(&net.relay_ns, "eth0", gso);
    let relay_key = relay_key_file(lab, &net.key);
    if relay_key_only {
        restart_relay(&mut net, &relay_key);
    }
    (net, relay_key)
}

/// Stops the relay (SIGTERM) and starts a new one with `key`.
fn restart_relay(net: &mut Overlay, key: &Path) {
    let status = net.relay.stop(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "relay stopped with {status:?}:\n{}",
        net.relay.log()
    );
    net.relay = start_relay(&net.relay_ns, key);
}

/// The MAC the scenarios give the edge at `lan_ip(n)`.
fn edge_mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 50, n])
}

/// `lanbridge edge -v` in `ns` with `key` and `extra`, its TAP `tap0` at
/// `ip`/24 with `mac`; does not wait.
fn spawn_edge(ns: &Ns, key: &Path, ip: &str, mac: MacAddr, extra: &[&str]) -> Proc {
    let relay = format!("{RELAY_IP}:{RELAY_PORT}");
    let cidr = format!("{ip}/24");
    let mac = mac.to_string();
    let mut args = vec![
        "edge",
        "-v",
        "--relay",
        &relay,
        "--key-file",
        key.to_str().unwrap(),
        "--tap",
        "tap0",
        "--address",
        &cidr,
        "--mac",
        &mac,
    ];
    args.extend_from_slice(extra);
    ns.spawn(lanbridge_bin(), &args).unwrap()
}

/// [`spawn_edge`] at `lan_ip(n)` in `ns` (underlay address `wan`), waiting
/// for its `tap0`.
fn start_edge_in(ns: Ns, wan: &str, key: &Path, n: u8, extra: &[&str]) -> Member {
    let ip = lan_ip(n);
    let mac = edge_mac(n);
    let proc = spawn_edge(&ns, key, &ip, mac, extra);
    wait_for_tap(&ns, &proc);
    Member {
        ns,
        proc,
        ip,
        mac,
        wan: wan.parse().unwrap(),
        relaunch: Relaunch::Edge {
            key: key.to_path_buf(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        },
    }
}

/// Waits until the edge `proc` in `ns` has made its `tap0`.
fn wait_for_tap(ns: &Ns, proc: &Proc) {
    let up = wait_until(Duration::from_secs(10), || {
        ns.has_link("tap0") || !proc.is_running()
    });
    assert!(
        up && proc.is_running(),
        "edge {} made no tap0:\n{}",
        ns.short(),
        proc.log()
    );
}

/// `--identity-file` with a file `{short}.identity` in the lab directory
/// (created by the member at its first start, kept across restarts).
fn identity(lab: &Lab, short: &str) -> [String; 2] {
    let path = lab.dir().join(format!("{short}.identity"));
    ["--identity-file".into(), path.to_str().unwrap().into()]
}

/// An edge `short` at `lan_ip(n)` in a new namespace on the underlay, with
/// the network key and `extra` arguments.
fn edge(lab: &Lab, net: &Overlay, short: &str, n: u8, gso: Gso, extra: &[&str]) -> Member {
    let (ns, wan) = net.host(lab, short);
    underlay_gso(&ns, "eth0", gso);
    start_edge_in(ns, &wan, &net.key, n, extra)
}

/// A LAN with L1 (.11) and a bridge host `br` (.2, NIC `eth0`, underlay
/// `wan0`) running `lanbridge bridge` with the network key and `extra`.
fn bridged_lan(lab: &Lab, net: &Overlay, gso: Gso, extra: &[&str]) -> BridgedLan {
    let lan = lab.switch("lan");
    let l1 = lan_host(lab, &lan, "l1", &lan_ip(11));
    let host = lan_host(lab, &lan, "br", &lan_ip(2));
    let wan = net.plug(lab, &host.ns, "wan0");
    underlay_gso(&host.ns, "wan0", gso);
    let relay = format!("{RELAY_IP}:{RELAY_PORT}");
    let mut args = vec!["--relay", &relay, "--key-file", net.key.to_str().unwrap()];
    args.extend_from_slice(extra);
    let proc = start_bridge(&host.ns, &args);
    let bridge = Member {
        ns: host.ns,
        proc,
        ip: host.ip,
        mac: host.mac,
        wan: wan.parse().unwrap(),
        relaunch: Relaunch::Bridge {
            args: args.iter().map(|a| a.to_string()).collect(),
        },
    };
    BridgedLan { lan, l1, bridge }
}

/// Runs Python code (`/usr/bin/python3 -c CODE ARGS...`) in `ns` within
/// `timeout`; panics with its output unless it succeeds. Returns stdout.
fn python(ns: &Ns, code: &str, args: &[&str], timeout: Duration) -> String {
    let mut all = vec!["-c", code];
    all.extend_from_slice(args);
    let out = ns
        .try_run(PYTHON, &all, timeout)
        .unwrap_or_else(|e| panic!("{PYTHON} in {}: {e:#}", ns.short()));
    assert!(
        out.status.success(),
        "{PYTHON} in {} failed (is python3-scapy installed?):\n{}\n{code}",
        ns.short(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a scapy script in `ns` (after `from scapy.all import *`).
fn scapy(ns: &Ns, script: &str) {
    let code = format!("from scapy.all import *\nconf.verb = 0\n{script}\n");
    python(ns, &code, &[], Duration::from_secs(60));
}

/// A datagram to the relay, from a capture on the relay's NIC.
#[derive(Clone, Debug)]
struct Dgram {
    /// Capture time since the epoch.
    ts: Duration,
    src: Ipv4Addr,
    sport: u16,
    /// The UDP payload, as far as the capture kept it.
    payload: Vec<u8>,
    /// True if the capture kept all of it.
    whole: bool,
}

impl Dgram {
    /// The kind of a version 2 datagram.
    fn kind(&self) -> Option<u8> {
        match self.payload.as_slice() {
            [V2, k, ..] => Some(*k),
            _ => None,
        }
    }

    /// `N` bytes at `range`, if captured.
    fn field<const N: usize>(&self, range: std::ops::Range<usize>) -> Option<[u8; N]> {
        self.payload.get(range)?.try_into().ok()
    }
}

/// The UDP datagrams to the relay's port among `frames`.
fn to_relay(frames: &[Frame]) -> Vec<Dgram> {
    frames
        .iter()
        .filter_map(|f| {
            let u = f.udp4()?;
            (u.dport == RELAY_PORT).then(|| Dgram {
                ts: f.ts,
                src: u.src,
                sport: u.sport,
                payload: u.payload.to_vec(),
                whole: !u.truncated,
            })
        })
        .collect()
}

/// The datagrams of `kind` from any of `from` captured within `window`.
fn count_kind(d: &[Dgram], from: &[Ipv4Addr], kind: u8, window: &(Duration, Duration)) -> usize {
    d.iter()
        .filter(|g| from.contains(&g.src) && g.kind() == Some(kind))
        .filter(|g| g.ts >= window.0 && g.ts <= window.1)
        .count()
}

/// The value that occurs most often (the first of equals), if any.
fn most_common<T: Copy + Eq + std::hash::Hash>(values: impl IntoIterator<Item = T>) -> Option<T> {
    let mut counts: HashMap<T, (usize, usize)> = HashMap::new();
    for (i, v) in values.into_iter().enumerate() {
        counts.entry(v).or_insert((0, i)).0 += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, (n, first))| (*n, std::cmp::Reverse(*first)))
        .map(|(v, _)| v)
}

/// Now, as a capture timestamp (time since the epoch).
fn now_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    lanbridge::status::hex(bytes)
}

/// True if `f` carries a marked ping (either direction).
fn marked(f: &Frame) -> bool {
    f.contains(&MARK)
}

/// True if `f` carries a control ping.
fn control(f: &Frame) -> bool {
    f.contains(&CONTROL)
}

/// The interface identifier of the EUI-64 link-local address the kernel
/// makes from `mac` (it appears in every IPv6 packet of that host).
fn eui64_iid(mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// True if `f` is an IPv6 packet whose source address ends in `iid`.
fn ipv6_src_iid(f: &Frame, iid: [u8; 8]) -> bool {
    let p = f.payload();
    f.ethertype() == Some(0x86dd) && p.len() >= 40 && p[16..24] == iid
}

/// True if `f` is from `mac` or names it as ARP sender.
fn sent_by_mac(f: &Frame, mac: MacAddr) -> bool {
    f.src() == Some(mac) || f.arp().is_some_and(|a| a.sha == mac)
}

/// True if `f` carries `ip` as IPv4 source or ARP sender address.
fn sent_by_ip(f: &Frame, ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap();
    f.ipv4_src() == Some(ip) || f.arp().is_some_and(|a| a.spa == ip.octets())
}

/// Stops a capture; panics with the lab's logs if tcpdump failed.
fn frames_of(lab: &Lab, cap: Capture, what: &str) -> Vec<Frame> {
    cap.stop()
        .unwrap_or_else(|e| panic!("capture {what}: {e:#}\n{}", lab.logs()))
}

/// What only the security scenarios ask of a [`Pinger`].
impl Pinger {
    /// Stops it and asserts that it sent at least `min_sent` and lost at
    /// most [`MAX_LOST`].
    fn assert_steady(self, lab: &Lab, min_sent: u32) {
        let what = self.what.clone();
        let (sent, received) = self.finish();
        assert!(
            sent >= min_sent && sent - received <= MAX_LOST,
            "ping {what}: {received} of {sent} answered (at least {min_sent} sent, at most \
             {MAX_LOST} lost expected):\n{}",
            lab.logs()
        );
    }
}

/// What a replay sent and got back.
#[derive(Debug)]
struct Replayed {
    /// Datagrams sent.
    sent: usize,
    /// What came back: (byte 0, byte 1, length) of each datagram.
    replies: Vec<(u8, u8, usize)>,
}

impl Replayed {
    /// The replies that answer a handshake initiation (UplinkResp,
    /// CookieReply): the only ones a relay may send to an address that has
    /// not proved anything.
    fn answers(&self) -> impl Iterator<Item = usize> + '_ {
        self.replies
            .iter()
            .filter(|(v, k, _)| *v == V2 && [kind::UPLINK_RESP, kind::COOKIE_REPLY].contains(k))
            .map(|(_, _, len)| *len)
    }
}

/// Sends every payload of `file` (one hex line each) to the relay from a
/// UDP socket bound to `bind_ip`:`port` in `ns`, 2 ms apart, collecting
/// what comes back until 1 s after the last; prints the number sent, then
/// `version:kind:length` of each reply.
const REPLAY_PY: &str = r#"
import select, socket, sys, time
path, ip, port, relay, rport = sys.argv[1:6]
payloads = [bytes.fromhex(l) for l in open(path).read().split()]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, int(port)))
s.setblocking(False)
replies = []
def drain():
    while True:
        try:
            d = s.recv(65536) + b'\0\0'
        except OSError:
            return
        replies.append(f'{d[0]}:{d[1]}:{len(d) - 2}')
for p in payloads:
    s.sendto(p, (relay, int(rport)))
    time.sleep(0.002)
    drain()
end = time.time() + 1.0
while time.time() < end:
    select.select([s], [], [], 0.1)
    drain()
print(len(payloads), *replies)
"#;

fn replay(ns: &Ns, bind_ip: &str, port: u16, file: &Path) -> Replayed {
    let out = python(
        ns,
        REPLAY_PY,
        &[
            file.to_str().unwrap(),
            bind_ip,
            &port.to_string(),
            RELAY_IP,
            &RELAY_PORT.to_string(),
        ],
        Duration::from_secs(120),
    );
    let mut words = out.split_whitespace();
    let sent = words.next().and_then(|w| w.parse().ok());
    let replies: Option<Vec<(u8, u8, usize)>> = words
        .map(|w| {
            let mut f = w.split(':');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    let (Some(sent), Some(replies)) = (sent, replies) else {
        panic!("replay printed {out:?}");
    };
    let mut kinds: BTreeMap<(u8, u8), (usize, usize)> = BTreeMap::new();
    for (v, k, len) in &replies {
        let e = kinds.entry((*v, *k)).or_default();
        e.0 += 1;
        e.1 = e.1.max(*len);
    }
    eprintln!(
        "replay from {bind_ip}:{port}: sent {sent} datagrams; got back, by (version, kind): \
         (count, largest) {kinds:?}"
    );
    Replayed { sent, replies }
}

/// `&str`s of `v`, for argument lists.
fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The recording a replay sends.
struct Recorded {
    /// How many datagrams.
    datagrams: usize,
    /// The length of the smallest UplinkInit among them.
    smallest_init: usize,
}

/// What replays did: (which, result).
type Replays = Vec<(&'static str, Replayed)>;

/// Watches B's TAP and the LAN while `replays` replay A's recording of
/// `recorded`; then L1 pings B with the control pattern, which
/// both captures must see. Asserts that nothing of A's (a marked ping, a
/// frame from A's MAC, or A's address from the bridge NIC, or the bridge
/// probing for it) showed on either, and that the relay never answered a
/// handshake with more bytes than the smallest UplinkInit replayed.
fn assert_replays_reach_nobody(
    lab: &Lab,
    phase: &str,
    t: &BridgedLan,
    a: &Member,
    b: &Member,
    recorded: &Recorded,
    replays: impl FnOnce() -> Replays,
) {
    let watch_b = b.ns.capture("tap0").unwrap();
    let watch_lan = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    for (what, r) in replays() {
        assert!(
            r.sent == recorded.datagrams,
            "{phase}: replay {what} sent {}",
            r.sent
        );
        let biggest = r.answers().max().unwrap_or(0);
        assert!(
            biggest <= recorded.smallest_init,
            "{phase}: replay {what}: the relay answered with {biggest} bytes, more than the {} \
             of the smallest UplinkInit it got",
            recorded.smallest_init
        );
    }
    let a_ip: Ipv4Addr = a.ip.parse().unwrap();
    let leaked = |frames: &[Frame]| {
        frames.iter().any(|f| {
            let from_bridge = f.src() == Some(t.bridge.mac);
            marked(f)
                || sent_by_mac(f, a.mac)
                || ipv6_src_iid(f, eui64_iid(a.mac))
                || (from_bridge && sent_by_ip(f, &a.ip))
                || (from_bridge && f.arp().is_some_and(|p| p.tpa == a_ip.octets()))
        })
    };
    // Anything let through would arrive within the quiet period.
    let through_b = watch_b.wait_for(QUIET, leaked);
    let through_lan = watch_lan.wait_for(Duration::ZERO, leaked);
    // The captures see what does cross.
    let control_pings = ping_count(&t.l1.ns, &b.ip, 3, &["-p", CONTROL_HEX]);
    assert_eq!(
        control_pings,
        3,
        "{phase}: L1 -> B after the replays:\n{}",
        lab.logs()
    );
    let watch_b = frames_of(lab, watch_b, "B's TAP");
    let watch_lan = frames_of(lab, watch_lan, "the LAN");
    let describe = |frames: &[Frame]| {
        let bad: Vec<&Frame> = frames
            .iter()
            .filter(|f| leaked(std::slice::from_ref(*f)))
            .collect();
        format!(
            "{} of {} frames, {} marked pings; the first: {:02x?}",
            bad.len(),
            frames.len(),
            bad.iter().filter(|f| marked(f)).count(),
            bad.first().map(|f| &f.data)
        )
    };
    assert!(
        !through_b && !leaked(&watch_b),
        "{phase}: the replays reached B's TAP: {}\n{}",
        describe(&watch_b),
        lab.logs()
    );
    assert!(
        !through_lan && !leaked(&watch_lan),
        "{phase}: the replays reached the LAN: {}\n{}",
        describe(&watch_lan),
        lab.logs()
    );
    for (what, frames) in [("B's TAP", &watch_b), ("the LAN", &watch_lan)] {
        let n = frames.iter().filter(|f| control(f)).count();
        assert!(
            n >= 3,
            "{phase}: {what}: the capture missed the control pings ({n})"
        );
    }
    for m in [b, &t.bridge] {
        assert!(
            m.proc.is_running(),
            "{phase}: {} died:\n{}",
            m.ns.short(),
            m.proc.log()
        );
    }
}

#[test]
fn replayed_recording_after_member_left_and_relay_restarted_reaches_nobody() {
    let Some(lab) = Lab::new("sec_replay") else {
        return;
    };
    let start = Instant::now();
    // Every member keeps its identity across restarts, as deployed.
    let (mut net, relay_key) = overlay(&lab, true, Gso::Cut);
    let mut t = bridged_lan(&lab, &net, Gso::Cut, &strs(&identity(&lab, "br")));
    let mut b = edge(&lab, &net, "b", 102, Gso::Cut, &strs(&identity(&lab, "b")));
    assert_ping(&lab, &b.ns, &t.l1.ip);

    // The recording starts before A's first datagram.
    let filter = format!("udp dst port {RELAY_PORT}");
    let recorder = net.relay_ns.capture_with("eth0", 0, &filter).unwrap();
    let live_b = b.ns.capture("tap0").unwrap();
    let live_lan = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    let a = edge(&lab, &net, "a", 101, Gso::Cut, &strs(&identity(&lab, "a")));
    assert_ping(&lab, &a.ns, &b.ip);
    assert_ping(&lab, &a.ns, &t.l1.ip);
    let to_b = ping_count(&a.ns, &b.ip, 10, &["-p", MARK_HEX]);
    let to_l1 = ping_count(&a.ns, &t.l1.ip, 10, &["-p", MARK_HEX]);
    assert!(
        to_b >= 8 && to_l1 >= 8,
        "marked pings from A: {to_b}/10 to B, {to_l1}/10 to L1:\n{}",
        lab.logs()
    );
    for (from, iface, dst) in [
        (&a.ns, "tap0", &b.ip),
        (&a.ns, "tap0", &t.l1.ip),
        (&b.ns, "tap0", &a.ip),
    ] {
        assert!(
            from.arping(iface, dst),
            "arping {} -> {dst}:\n{}",
            from.short(),
            lab.logs()
        );
    }
    let live_b = frames_of(&lab, live_b, "B's TAP");
    let live_lan = frames_of(&lab, live_lan, "the LAN");
    let at_b = live_b
        .iter()
        .filter(|f| marked(f) && f.src() == Some(a.mac))
        .count();
    let at_lan = live_lan
        .iter()
        .filter(|f| marked(f) && sent_by_ip(f, &a.ip))
        .count();
    eprintln!("live: {at_b} marked pings from A on B's TAP, {at_lan} on the LAN");
    assert!(
        at_b >= 8 && at_lan >= 8,
        "the captures missed A's marked pings ({at_b} on B's TAP, {at_lan} on the LAN)"
    );

    // A leaves; the recording is what it sent, from its first datagram on.
    let status = a.proc.stop(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "A stopped with {status:?}:\n{}",
        a.proc.log()
    );
    let recording: Vec<Dgram> = to_relay(&frames_of(&lab, recorder, "the relay"))
        .into_iter()
        .filter(|d| d.src == a.wan)
        .collect();
    let kinds: BTreeSet<u8> = recording.iter().filter_map(Dgram::kind).collect();
    eprintln!(
        "recorded {} datagrams of A, kinds {kinds:?}",
        recording.len()
    );
    assert!(
        recording.iter().all(|d| d.whole),
        "the recording is cut short"
    );
    for k in [kind::UPLINK_INIT, kind::DATA] {
        assert!(
            kinds.contains(&k),
            "no datagram of kind {k} from A in the recording (kinds {kinds:?}): is the \
             recording complete, and is this version 2?"
        );
    }
    assert!(
        kinds.contains(&kind::PEER_INIT) || kinds.contains(&kind::PEER_RESP),
        "no member handshake from A in the recording (kinds {kinds:?})"
    );
    let a_port = most_common(recording.iter().map(|d| d.sport)).unwrap();
    let recorded = Recorded {
        datagrams: recording.len(),
        smallest_init: recording
            .iter()
            .filter(|d| d.kind() == Some(kind::UPLINK_INIT))
            .map(|d| d.payload.len())
            .min()
            .unwrap_or(0),
    };
    let file = lab.dir().join("a-recording.hex");
    let lines: Vec<String> = recording.iter().map(|d| hex(&d.payload)).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let a_wan = a.wan.to_string();
    let (x, x_ip) = net.host(&lab, "x");

    // To the relay A knew, then to a new relay process with the same key.
    let phase = "A left";
    assert_replays_reach_nobody(&lab, phase, &t, &a, &b, &recorded, || {
        let mut done = vec![(
            "from A's address, same relay",
            replay(&a.ns, &a_wan, a_port, &file),
        )];
        restart_relay(&mut net, &relay_key);
        assert!(
            ping_within(&b.ns, &t.l1.ip, RECONNECT),
            "B and the bridge did not come back after the relay restarted:\n{}",
            lab.logs()
        );
        done.push((
            "from A's address, restarted relay",
            replay(&a.ns, &a_wan, a_port, &file),
        ));
        done.push((
            "from another address, restarted relay",
            replay(&x, &x_ip, a_port, &file),
        ));
        done
    });

    // B, the bridge and the relay restart (B and the bridge with their
    // identities): no process that saw A's sessions, or the replays above,
    // is left to remember them.
    b.restart();
    t.bridge.restart();
    restart_relay(&mut net, &relay_key);
    assert!(
        ping_within(&b.ns, &t.l1.ip, RECONNECT),
        "B and the bridge did not come back after they and the relay restarted:\n{}",
        lab.logs()
    );
    let phase = "A left, then relay, B and bridge restarted";
    assert_replays_reach_nobody(&lab, phase, &t, &a, &b, &recorded, || {
        vec![
            (
                "from A's address, restarted members",
                replay(&a.ns, &a_wan, a_port, &file),
            ),
            (
                "from another address, restarted members",
                replay(&x, &x_ip, a_port, &file),
            ),
        ]
    });
    eprintln!("sec_replay: {:.2?} in all", start.elapsed());
}

/// True if a relay's log has a warning that it needs only the relay key.
fn warns_relay_key_only(log: &str) -> bool {
    log.lines().any(|l| {
        let l = l.to_lowercase();
        l.contains("warn") && (l.contains("relay-key") || l.contains("relay key"))
    })
}

#[test]
fn a_relay_with_only_the_relay_key_carries_edges_and_bridges() {
    let Some(lab) = Lab::new("sec_relay_key") else {
        return;
    };
    let start = Instant::now();
    let mut net = Overlay::new(&lab);
    let relay_key = relay_key_file(&lab, &net.key);
    let network = key_hex(&net.key);
    let text = std::fs::read_to_string(&relay_key).unwrap().to_lowercase();
    assert!(
        !text.contains(&network),
        "the relay key file holds the network key"
    );
    // The same network key gives the same relay key (for a second relay, or
    // a replaced one).
    let again = lanbridge_with_stdin(&["relay-key"], &net.key);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).to_lowercase(),
        text,
        "relay-key is not a function of the network key"
    );
    // Given the network key, the relay runs, and warns that it needs less.
    let network_key = net.key.clone();
    restart_relay(&mut net, &network_key);
    assert!(
        wait_until(EVENT, || warns_relay_key_only(&net.relay.log())),
        "a relay given the network key does not warn that it needs only the relay key:\n{}",
        net.relay.log()
    );
    restart_relay(&mut net, &relay_key);

    let t = bridged_lan(&lab, &net, Gso::Keep, &[]);
    let a = edge(&lab, &net, "a", 101, Gso::Keep, &[]);
    let b = edge(&lab, &net, "b", 102, Gso::Keep, &[]);
    for (from, to) in [
        (&a.ns, &b.ip),
        (&b.ns, &a.ip),
        (&a.ns, &t.l1.ip),
        (&t.l1.ns, &a.ip),
    ] {
        assert_ping(&lab, from, to);
    }
    let wait = Duration::from_secs(40);
    let len = 4 << 20;
    transfer_intact(&lab, "A -> B", &a.ns, &b.ns, &b.ip, 5001, len, 11, wait);
    transfer_intact(&lab, "L1 -> A", &t.l1.ns, &a.ns, &a.ip, 5002, len, 12, wait);
    transfer_intact(
        &lab, "A -> L1", &a.ns, &t.l1.ns, &t.l1.ip, 5003, len, 13, wait,
    );
    assert!(
        !warns_relay_key_only(&net.relay.log()),
        "a relay given the relay key warns about it:\n{}",
        net.relay.log()
    );
    assert!(net.relay.is_running(), "relay died:\n{}", net.relay.log());
    eprintln!("sec_relay_key: {:.2?} in all", start.elapsed());
}

/// Runs `lanbridge ARGS...` in `ns` and asserts that it refuses to start
/// with exit status 1 and a message naming the relay key.
fn assert_refuses_relay_key(ns: &Ns, args: &[&str]) {
    let out = ns
        .try_run(lanbridge_bin(), args, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("lanbridge {}: {e:#}", args.join(" ")));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert_eq!(
        out.status.code(),
        Some(1),
        "lanbridge {} given the relay key: {stderr}",
        args.join(" ")
    );
    assert!(
        stderr.contains("relay key") || stderr.contains("relay-key"),
        "lanbridge {}: the error does not name the relay key: {stderr}",
        args.join(" ")
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_edge_given_the_relay_key_reaches_nobody() {
    let Some(lab) = Lab::new("sec_wrong_key") else {
        return;
    };
    let start = Instant::now();
    let (net, relay_key) = overlay(&lab, true, Gso::Keep);
    let t = bridged_lan(&lab, &net, Gso::Keep, &[]);
    let a = edge(&lab, &net, "a", 101, Gso::Keep, &[]);
    let b = edge(&lab, &net, "b", 102, Gso::Keep, &[]);
    assert_ping(&lab, &a.ns, &b.ip);
    assert_ping(&lab, &a.ns, &t.l1.ip);

    // (a) The relay key file: refused at start, by an edge and a bridge.
    let (e_ns, e_wan) = net.host(&lab, "e");
    let relay = format!("{RELAY_IP}:{RELAY_PORT}");
    let rk = relay_key.to_str().unwrap();
    assert_refuses_relay_key(
        &e_ns,
        &[
            "edge",
            "--relay",
            &relay,
            "--key-file",
            rk,
            "--tap",
            "tap0",
            "--address",
            "192.168.50.103/24",
        ],
    );
    assert!(!e_ns.has_link("tap0"), "the refused edge left a tap0");
    assert_refuses_relay_key(
        &e_ns,
        &[
            "bridge",
            "--iface",
            "eth0",
            "--relay",
            &relay,
            "--key-file",
            rk,
        ],
    );

    // (b) The relay key's 64 hex characters as a network key: the edge runs
    // and reaches nobody.
    let text = std::fs::read_to_string(&relay_key).unwrap();
    let stripped = lab.dir().join("relay-key-as-network.key");
    std::fs::write(
        &stripped,
        text.trim().trim_start_matches("relay-key:").to_string() + "\n",
    )
    .unwrap();
    let watch_lan = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    let watch_b = b.ns.capture("tap0").unwrap();
    let e = start_edge_in(e_ns, &e_wan, &stripped, 103, &[]);
    let watch_e = e.ns.capture("tap0").unwrap();
    assert_eq!(ping_count(&e.ns, &b.ip, 5, &[]), 0, "E reached B");
    assert_eq!(ping_count(&e.ns, &t.l1.ip, 5, &[]), 0, "E reached L1");
    assert!(!e.ns.arping("tap0", &b.ip), "B answered E's ARP");
    assert!(!e.ns.arping("tap0", &t.l1.ip), "L1 answered E's ARP");
    // Meanwhile the network works, and broadcasts go round.
    assert_eq!(ping_count(&a.ns, &b.ip, 5, &[]), 5, "{}", lab.logs());
    assert_eq!(ping_count(&a.ns, &t.l1.ip, 5, &[]), 5, "{}", lab.logs());
    assert!(a.ns.arping("tap0", &t.l1.ip), "{}", lab.logs());
    assert!(b.ns.arping("tap0", &a.ip), "{}", lab.logs());
    assert!(
        e.proc.is_running(),
        "an edge given a key that is the relay key's hex did not keep running:\n{}",
        e.proc.log()
    );
    let from_e = |f: &Frame| {
        sent_by_ip(f, &e.ip) || f.contains_mac_bytes(e.mac) || ipv6_src_iid(f, eui64_iid(e.mac))
    };
    // A's frames come onto the LAN from the bridge NIC, into B's TAP from
    // A's MAC.
    for (what, frames, a_as) in [
        (
            "the LAN",
            frames_of(&lab, watch_lan, "the LAN"),
            t.bridge.mac,
        ),
        ("B's TAP", frames_of(&lab, watch_b, "B's TAP"), a.mac),
    ] {
        let bad: Vec<&Frame> = frames.iter().filter(|f| from_e(f)).collect();
        assert!(
            bad.is_empty(),
            "{what}: {} of {} frames from E, e.g. {:02x?}",
            bad.len(),
            frames.len(),
            bad[0].data
        );
        let from_a = frames
            .iter()
            .filter(|f| f.src() == Some(a_as) && sent_by_ip(f, &a.ip))
            .count();
        assert!(from_a > 0, "{what}: the capture saw nothing of A either");
    }
    let into_e: Vec<Frame> = frames_of(&lab, watch_e, "E's TAP")
        .into_iter()
        .filter(|f| f.src() != Some(e.mac))
        .collect();
    assert!(
        into_e.is_empty(),
        "{} frames reached E's TAP, e.g. {:02x?}",
        into_e.len(),
        into_e[0].data
    );
    eprintln!("sec_wrong_key: {:.2?} in all", start.elapsed());
}

/// A user-space wire between `down` (C's side) and `up` (the underlay
/// switch's) in C's wire namespace: forwards every frame both ways, and,
/// once the control file (argument 4: member id, receiver index, count, in
/// hex and decimal) exists, rewrites up to `count` of C's Data datagrams to
/// that member: the inner receiver index becomes the given one, the inner
/// counter 2^64 - 2 (big and little endian in turn), the rest of the inner
/// message garbage; the routed header and the relay tag stay C's own, so
/// the relay sees a datagram of C's uplink. The UDP checksum of every IPv4
/// datagram it forwards is zeroed ("none"): one sent with checksum offload
/// reaches the wire unfinished, and a packet socket's send does not finish
/// it. Prints `ready`, then `forged N`.
const WIRE_PY: &str = r#"
import os, select, socket, sys, time
down_if, up_if, rport, ctl = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def open_raw(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((name, 3))
    return s
down, up = open_raw(down_if), open_raw(up_if)
other = {down: up, up: down}
target, forged, checked = None, 0, 0.0
def forge(frame):
    if len(frame) < 34 or frame[12:14] != b'\x08\x00' or frame[23] != 17:
        return None
    u = 14 + (frame[14] & 0x0f) * 4
    if int.from_bytes(frame[u + 2:u + 4], 'big') != rport:
        return None
    end = u + int.from_bytes(frame[u + 4:u + 6], 'big')
    p = u + 8
    d = frame[p:end]
    if len(d) < 24 + 12 + 16 + 16 or d[0] != 2 or d[1] != 7 or d[16:24] != target[0]:
        return None
    out = bytearray(frame)
    out[p + 24:p + 28] = target[1]
    order = 'big' if forged % 2 == 0 else 'little'
    out[p + 28:p + 36] = (2**64 - 2).to_bytes(8, order)
    for i in range(p + 36, end - 16):
        out[i] ^= 0xa5
    return out
def no_udp_checksum(frame):
    if len(frame) >= 42 and frame[12:14] == b'\x08\x00' and frame[23] == 17:
        u = 14 + (frame[14] & 0x0f) * 4
        frame[u + 6:u + 8] = b'\x00\x00'
    return frame
print('ready', flush=True)
while True:
    ready, _, _ = select.select([down, up], [], [], 0.2)
    if target is None and time.time() - checked > 0.1:
        checked = time.time()
        if os.path.exists(ctl):
            dest, index, count = open(ctl).read().split()
            target = (bytes.fromhex(dest), bytes.fromhex(index), int(count))
    for s in ready:
        frame, addr = s.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        frame = bytearray(frame)
        if s is down and target is not None and forged < target[2]:
            f = forge(frame)
            if f is not None:
                frame = f
                forged += 1
                print('forged', forged, flush=True)
        try:
            other[s].send(no_udp_checksum(frame))
        except OSError as e:
            print('dropped', len(frame), e, flush=True)
"#;

/// C's way onto the underlay: namespace `c` with `eth0` at a fixed address,
/// wired to the underlay switch through namespace `cwire` running
/// [`WIRE_PY`]. Returns (C's namespace, its address, the wire process, the
/// control file).
fn hostile_host(lab: &Lab, net: &Overlay) -> (Ns, String, Proc, PathBuf) {
    let c = lab.ns("c");
    let wire = lab.ns("cwire");
    for key in ["all", "default"] {
        wire.sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1")
            .unwrap();
    }
    // Out of the range Overlay::host hands out (from .10 up).
    let ip = "172.16.0.250";
    lab.plug(&wire, "up", &net.inet, None).unwrap();
    lab.veth(&c, "eth0", Some(&format!("{ip}/24")), &wire, "down", None)
        .unwrap();
    // Whole datagrams with their checksums, so the wire can forward and
    // rewrite them as they are.
    ethtool_off(&c, "eth0", &["tx-udp-segmentation", "tx"]);
    let ctl = lab.dir().join("cwire.ctl");
    let proc = wire
        .spawn(
            PYTHON,
            &[
                "-u",
                "-c",
                WIRE_PY,
                "down",
                "up",
                &RELAY_PORT.to_string(),
                ctl.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(
        wait_until(EVENT, || proc.log().contains("ready") || !proc.is_running())
            && proc.is_running(),
        "C's wire did not start:\n{}",
        proc.log()
    );
    (c, ip.to_string(), proc, ctl)
}

/// How many datagrams the wire has forged so far.
fn forged(wire: &Proc) -> usize {
    wire.log()
        .lines()
        .filter_map(|l| l.strip_prefix("forged ")?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// Asserts that A's neighbour entry for B holds B's MAC.
fn assert_neigh_kept(lab: &Lab, a: &Member, b: &Member, when: &str) {
    let n = a.ns.neigh(&b.ip);
    assert_eq!(
        n.as_ref().and_then(|n| n.mac),
        Some(b.mac),
        "{when}: A's entry for B is {n:?}, B's MAC is {}:\n{}",
        b.mac,
        lab.logs()
    );
}

#[test]
fn a_member_forging_another_identity_or_its_macs_changes_nothing() {
    let Some(lab) = Lab::new("sec_forge") else {
        return;
    };
    let start = Instant::now();
    let (net, _) = overlay(&lab, true, Gso::Cut);
    // Through the relay, where C's forgeries go and the test counts what
    // A and B send (a direct Data forged by C fails A's AEAD like any
    // other: netsim's attack tests).
    let relayed = ["--no-direct"];
    let a = edge(&lab, &net, "a", 101, Gso::Cut, &relayed);
    let b = edge(&lab, &net, "b", 102, Gso::Cut, &relayed);
    let (c_ns, c_wan, wire, ctl) = hostile_host(&lab, &net);
    let c = start_edge_in(c_ns, &c_wan, &net.key, 103, &relayed);
    assert_ping(&lab, &a.ns, &b.ip);
    assert_ping(&lab, &b.ns, &a.ip);
    assert_ping(&lab, &c.ns, &b.ip);
    assert_ping(&lab, &c.ns, &a.ip);
    assert_neigh_kept(&lab, &a, &b, "before");

    let filter = format!("udp dst port {RELAY_PORT}");
    let at_relay = net.relay_ns.capture_with("eth0", 128, &filter).unwrap();
    let at_a = a.ns.capture("tap0").unwrap();
    let to_b =
        b.ns.capture_with("eth0", 0, &format!("udp src port {RELAY_PORT}"))
            .unwrap();
    let pinger = Pinger::start(&a.ns, &b.ip, "0.1");
    let attack_start = Instant::now();

    // (a) C takes B's MAC and claims B's address with it: ARP replies to A
    // and to everyone, UDP to A and to everyone; each marked in its
    // payload or padding.
    let c_mac = c.mac;
    c.ns.ip(&["link", "set", "dev", "tap0", "address", &b.mac.to_string()]);
    let tag = "b'forged-by-c-as-b'";
    scapy(
        &c.ns,
        &format!(
            "bm, am, bc = '{bm}', '{am}', 'ff:ff:ff:ff:ff:ff'\n\
             f = [Ether(src=bm, dst=am) / ARP(op=2, hwsrc=bm, psrc='{bip}', hwdst=am, pdst='{aip}')\n\
             / Padding(load={tag}),\n\
             Ether(src=bm, dst=bc) / ARP(op=2, hwsrc=bm, psrc='{bip}', hwdst=bc, pdst='{bip}')\n\
             / Padding(load={tag}),\n\
             Ether(src=bm, dst=am) / IP(src='{bip}', dst='{aip}') / UDP(sport=9, dport=9) / {tag},\n\
             Ether(src=bm, dst=bc) / IP(src='{bip}', dst='192.168.50.255') / UDP(sport=9, dport=9)\n\
             / {tag}]\n\
             sendp(f, iface='tap0', count=10, inter=0.1)",
            bm = b.mac,
            am = a.mac,
            bip = b.ip,
            aip = a.ip,
        ),
    );
    // C's own stack talks with B's MAC too.
    ping_count(&c.ns, &a.ip, 5, &[]);
    assert_neigh_kept(&lab, &a, &b, "after C took B's MAC");
    c.ns.ip(&["link", "set", "dev", "tap0", "address", &c_mac.to_string()]);

    // (b) Datagrams to the relay under B's uplink session (B's receiver
    // index, read from B's Data datagrams), with counters at the top of
    // the range and garbage, from C's address and from B's address and
    // port.
    let seen = to_relay(&at_relay.frames());
    let data_of = |who: Ipv4Addr| -> Vec<Dgram> {
        seen.iter()
            .filter(|d| d.src == who && d.kind() == Some(kind::DATA))
            .cloned()
            .collect()
    };
    let b_data = data_of(b.wan);
    let a_data = data_of(a.wan);
    let (Some(b_last), Some(_)) = (b_data.last(), a_data.last()) else {
        panic!(
            "no Data datagrams of A ({}) or B ({}) at the relay:\n{}",
            a_data.len(),
            b_data.len(),
            lab.logs()
        );
    };
    let b_index: [u8; 4] = b_last.field(routed::RELAY_INDEX).unwrap();
    let a_id: [u8; 8] = most_common(b_data.iter().filter_map(|d| d.field(routed::DEST))).unwrap();
    let b_id: [u8; 8] = most_common(a_data.iter().filter_map(|d| d.field(routed::DEST))).unwrap();
    eprintln!(
        "B: relay index {}, counter {}, port {}; A's id {}, B's id {}",
        hex(&b_index),
        hex(&b_last.field::<8>(routed::COUNTER).unwrap()),
        b_last.sport,
        hex(&a_id),
        hex(&b_id)
    );
    scapy(
        &c.ns,
        &format!(
            "import os\n\
             pkts = []\n\
             for kind in (5, 6, 7):\n\
             \x20   for ctr in ((2**64 - 2).to_bytes(8, 'big'), (2**64 - 2).to_bytes(8, 'little'),\n\
             \x20               (2**63).to_bytes(8, 'big')):\n\
             \x20       for dest in (bytes.fromhex('{a_id}'), b'\\xff' * 8):\n\
             \x20           body = bytes([2, kind, 0, 0]) + bytes.fromhex('{index}') + ctr + dest\\\n\
             \x20               + os.urandom(64) + os.urandom(16)\n\
             \x20           pkts.append(IP(dst='{RELAY_IP}') / UDP(sport=40000, dport={RELAY_PORT})\n\
             \x20                       / Raw(body))\n\
             \x20           pkts.append(IP(src='{b_wan}', dst='{RELAY_IP}')\n\
             \x20                       / UDP(sport={b_port}, dport={RELAY_PORT}) / Raw(body))\n\
             send(pkts, count=5, inter=0.005)",
            a_id = hex(&a_id),
            index = hex(&b_index),
            b_wan = b.wan,
            b_port = b_last.sport,
        ),
    );
    assert_neigh_kept(&lab, &a, &b, "after the forged datagrams to the relay");

    // (c) Frames under A's member session at B, sent through C's own
    // uplink: C's Data datagrams to B rewritten on the wire with B's
    // receiver index of its session with A (read from A's Data datagrams
    // to B), counter 2^64 - 2 and garbage.
    let seen = to_relay(&at_relay.frames());
    let inner = seen
        .iter()
        .rev()
        .filter(|d| d.src == a.wan && d.kind() == Some(kind::DATA))
        .find(|d| d.field(routed::DEST) == Some(b_id))
        .and_then(|d| d.field::<4>(routed::INNER_INDEX))
        .expect("no Data datagram of A to B");
    let budget = 40;
    std::fs::write(&ctl, format!("{} {} {budget}\n", hex(&b_id), hex(&inner))).unwrap();
    let wanted = wait_until(EVENT, || {
        ping_count(&c.ns, &b.ip, 10, &[]);
        forged(&wire) >= budget
    });
    eprintln!(
        "C's wire forged {} datagrams under A's session at B (index {}){}",
        forged(&wire),
        hex(&inner),
        if wanted { "" } else { ", fewer than planned" }
    );
    assert!(
        forged(&wire) > 0,
        "C's wire forged nothing:\n{}",
        wire.log()
    );
    assert_neigh_kept(&lab, &a, &b, "after the forged frames under A's session");

    // A's pings went on all along; nothing of C's went to A as B.
    let quiet = at_a.wait_for(QUIET, |f| f.iter().any(|f| f.contains(b"forged-by-c")));
    let took = attack_start.elapsed();
    let min_sent = (took.as_secs_f64() * 10.0 * 0.8) as u32;
    pinger.assert_steady(&lab, min_sent);
    assert!(!quiet, "C's frames with B's MAC reached A's TAP");
    let at_a = frames_of(&lab, at_a, "A's TAP");
    let as_b = at_a.iter().filter(|f| f.contains(b"forged-by-c")).count();
    assert_eq!(as_b, 0, "{as_b} frames of C with B's MAC reached A's TAP");
    let reached_b = frames_of(&lab, to_b, "B's underlay")
        .iter()
        .filter(|f| {
            f.contains(&(u64::MAX - 1).to_be_bytes()) || f.contains(&(u64::MAX - 1).to_le_bytes())
        })
        .count();
    eprintln!("{reached_b} datagrams with counter 2^64 - 2 reached B's underlay NIC");

    // Nothing is locked out, either way.
    assert_eq!(ping_count(&a.ns, &b.ip, 10, &[]), 10, "{}", lab.logs());
    assert_eq!(ping_count(&b.ns, &a.ip, 10, &[]), 10, "{}", lab.logs());
    assert_neigh_kept(&lab, &a, &b, "at the end");
    eprintln!("sec_forge: {:.2?} in all", start.elapsed());
}

/// Sends `count` frames out of `iface` (argument 1) at about `rate` a
/// second (argument 3): broadcast and unicast to unknown MACs in turn, UDP
/// from `ip` (argument 4) marked `lanbridge-mac-flood`, each from a new
/// source MAC `02:f1:..` (destinations `02:f2:..`).
const FLOOD_PY: &str = r#"
import socket, sys, time
from scapy.all import Ether, IP, UDP, conf
conf.verb = 0
iface, count, rate, ip = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
tpl = bytearray(bytes(Ether(src='02:f1:00:00:00:00', dst='ff:ff:ff:ff:ff:ff')
    / IP(src=ip, dst='192.168.50.255') / UDP(sport=9, dport=9) / b'lanbridge-mac-flood'))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
start, sent, lost = time.time(), 0, 0
for i in range(count):
    f = bytearray(tpl)
    f[6:12] = bytes([0x02, 0xf1]) + i.to_bytes(4, 'big')
    if i % 2:
        f[0:6] = bytes([0x02, 0xf2]) + i.to_bytes(4, 'big')
    try:
        s.send(f)
        sent += 1
    except OSError:
        lost += 1
    ahead = start + (i + 1) / rate - time.time()
    if ahead > 0:
        time.sleep(ahead)
print(sent, lost, round(time.time() - start, 2))
"#;

/// True for a MAC the flood uses.
fn flood_mac(mac: Option<MacAddr>) -> bool {
    mac.is_some_and(|m| m.0[0] == 0x02 && (m.0[1] == 0xf1 || m.0[1] == 0xf2))
}

#[test]
fn a_member_flooding_new_macs_changes_nothing_for_the_others() {
    let Some(lab) = Lab::new("sec_mac_flood") else {
        return;
    };
    let start = Instant::now();
    let (net, _) = overlay(&lab, true, Gso::Keep);
    let t = bridged_lan(&lab, &net, Gso::Keep, &[]);
    let a = edge(&lab, &net, "a", 101, Gso::Keep, &[]);
    let b = edge(&lab, &net, "b", 102, Gso::Keep, &[]);
    let c = edge(&lab, &net, "c", 103, Gso::Keep, &[]);
    for (from, to) in [
        (&a.ns, &b.ip),
        (&a.ns, &t.l1.ip),
        (&t.l1.ns, &a.ip),
        (&c.ns, &b.ip),
        (&c.ns, &t.l1.ip),
    ] {
        assert_ping(&lab, from, to);
    }
    let watch_lan = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    let watch_b = b.ns.capture_with("tap0", 96, "").unwrap();
    let pingers = [
        Pinger::start(&a.ns, &b.ip, "0.1"),
        Pinger::start(&a.ns, &t.l1.ip, "0.1"),
        Pinger::start(&t.l1.ns, &a.ip, "0.1"),
    ];
    let flood_start = Instant::now();
    let out = python(
        &c.ns,
        FLOOD_PY,
        &["tap0", "10000", "2000", &c.ip],
        Duration::from_secs(60),
    );
    eprintln!("flood (sent, failed, seconds): {}", out.trim());
    // The pings go on a while after the flood, through what it left.
    assert!(
        ping_within(&a.ns, &b.ip, QUIET),
        "A -> B after the flood:\n{}",
        lab.logs()
    );
    let took = flood_start.elapsed();
    let min_sent = (took.as_secs_f64() * 10.0 * 0.8) as u32;
    for p in pingers {
        p.assert_steady(&lab, min_sent);
    }
    for (from, to) in [
        (&a.ns, &b.ip),
        (&b.ns, &a.ip),
        (&a.ns, &t.l1.ip),
        (&t.l1.ns, &a.ip),
    ] {
        assert_eq!(
            ping_count(from, to, 5, &[]),
            5,
            "{} -> {to} after the flood:\n{}",
            from.short(),
            lab.logs()
        );
    }
    let lan = frames_of(&lab, watch_lan, "the LAN");
    let own = [t.l1.mac, t.bridge.mac];
    let strangers: BTreeSet<String> = lan
        .iter()
        .filter_map(|f| f.src())
        .filter(|m| !own.contains(m))
        .map(|m| m.to_string())
        .collect();
    assert!(
        strangers.is_empty(),
        "the LAN saw source MACs other than L1's and the bridge NIC's: {strangers:?}"
    );
    let flood_on_lan: Vec<&Frame> = lan
        .iter()
        .filter(|f| {
            flood_mac(f.src())
                || flood_mac(f.dst())
                || f.arp()
                    .is_some_and(|a| flood_mac(Some(a.sha)) || flood_mac(Some(a.tha)))
        })
        .collect();
    assert!(
        flood_on_lan.is_empty(),
        "{} frames on the LAN name a flood MAC, e.g. {:02x?}",
        flood_on_lan.len(),
        flood_on_lan[0].data
    );
    let marked_lan = lan
        .iter()
        .filter(|f| f.contains(b"lanbridge-mac-flood"))
        .count();
    let at_b = frames_of(&lab, watch_b, "B's TAP")
        .iter()
        .filter(|f| flood_mac(f.src()))
        .count();
    eprintln!("flood frames: {at_b} reached B's TAP, {marked_lan} the LAN (as the bridge NIC's)");
    assert!(
        at_b > 0,
        "no flood frame reached B's TAP: the flood did not cross, so this proves nothing"
    );
    // A member joining after the flood finds room everywhere.
    let d = edge(&lab, &net, "d", 104, Gso::Keep, &[]);
    for (from, to) in [(&d.ns, &b.ip), (&d.ns, &t.l1.ip), (&t.l1.ns, &d.ip)] {
        assert_ping(&lab, from, to);
    }
    for m in [&a, &b, &c, &d, &t.bridge] {
        assert!(
            m.proc.is_running(),
            "{} died:\n{}",
            m.ns.short(),
            m.proc.log()
        );
    }
    assert!(net.relay.is_running(), "relay died:\n{}", net.relay.log());
    eprintln!("sec_mac_flood: {:.2?} in all", start.elapsed());
}

/// Like `lan::tcp_transfer`, but the sender writes at most `rate` bytes a
/// second (16 KiB at a time), so that the transfer lasts `len / rate`.
fn paced_transfer(
    from: &Ns,
    to: &Ns,
    to_ip: &str,
    port: u16,
    data: &[u8],
    rate: usize,
    timeout: Duration,
) -> Result<Vec<u8>> {
    const CHUNK: usize = 16 << 10;
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
                let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).context("bind")?;
                let _ = ready_tx.send(());
                listener.set_nonblocking(true)?;
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
                        Err(e) => bail!("read after {} bytes: {e}", got.len()),
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
                    let start = Instant::now();
                    for (i, piece) in data.chunks(CHUNK).enumerate() {
                        let due = start + Duration::from_secs_f64((i * CHUNK) as f64 / rate as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        stream
                            .write_all(piece)
                            .with_context(|| format!("write at {}", i * CHUNK))?;
                    }
                    stream.shutdown(std::net::Shutdown::Write)?;
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

/// A paced transfer of [`LONG_LEN`] bytes at [`LONG_RATE`]: intact (SHA-256
/// compared) and lasting at least [`LONG_MIN`]. Returns its window, as
/// capture timestamps.
fn long_transfer(
    lab: &Lab,
    what: &str,
    from: &Ns,
    to: &Ns,
    to_ip: &str,
    port: u16,
    seed: u64,
) -> (Duration, Duration) {
    let data = pseudo_random(LONG_LEN, seed);
    let begin = now_epoch();
    let start = Instant::now();
    let got = paced_transfer(from, to, to_ip, port, &data, LONG_RATE, LONG_WAIT)
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", lab.logs()));
    let took = start.elapsed();
    let (sent, received) = (sha256(&data), sha256(&got));
    assert!(
        sent == received,
        "{what}: sha256 sent {sent}, received {received}: {}\n{}",
        diff_bytes(&data, &got),
        lab.logs()
    );
    assert!(took >= LONG_MIN, "{what}: took only {took:.2?}");
    eprintln!("{what}: {LONG_LEN} bytes intact in {took:.2?}");
    (begin, now_epoch())
}

/// Bytes of each long transfer.
const LONG_LEN: usize = 10 << 20;
/// Its pace, bytes a second: about 10 s.
const LONG_RATE: usize = 1 << 20;
/// The least it must last: 4 rotations at `--rekey-after 2`.
const LONG_MIN: Duration = Duration::from_secs(8);
/// Its bound.
const LONG_WAIT: Duration = Duration::from_secs(60);
/// Handshakes of each kind a long transfer must see.
const MIN_ROTATIONS: usize = 3;

/// Asserts the rotations seen at the relay within `window`: at least
/// [`MIN_ROTATIONS`] PeerInits from either of `pair`, UplinkInits from each,
/// and as many relay receiver indexes in each one's Data datagrams.
fn assert_rotated(d: &[Dgram], what: &str, pair: [&Member; 2], window: &(Duration, Duration)) {
    let wans = [pair[0].wan, pair[1].wan];
    let peer_inits = count_kind(d, &wans, kind::PEER_INIT, window);
    eprintln!("{what}: {peer_inits} PeerInits");
    assert!(
        peer_inits >= MIN_ROTATIONS,
        "{what}: {peer_inits} PeerInits at the relay during the transfer, at least \
         {MIN_ROTATIONS} expected with --rekey-after 2"
    );
    for m in pair {
        let inits = count_kind(d, &[m.wan], kind::UPLINK_INIT, window);
        let indexes: BTreeSet<[u8; 4]> = d
            .iter()
            .filter(|g| g.src == m.wan && g.kind() == Some(kind::DATA))
            .filter(|g| g.ts >= window.0 && g.ts <= window.1)
            .filter_map(|g| g.field(routed::RELAY_INDEX))
            .collect();
        eprintln!(
            "{what}: {}: {inits} UplinkInits, {} relay indexes in its Data",
            m.ns.short(),
            indexes.len()
        );
        assert!(
            inits >= MIN_ROTATIONS && indexes.len() >= MIN_ROTATIONS,
            "{what}: {} sent {inits} UplinkInits and its Data named {} uplink sessions during \
             the transfer, at least {MIN_ROTATIONS} each expected with --rekey-after 2",
            m.ns.short(),
            indexes.len()
        );
    }
}

#[test]
fn a_key_rotation_during_a_long_transfer_loses_no_byte() {
    let Some(lab) = Lab::new("sec_rekey") else {
        return;
    };
    let start = Instant::now();
    // Through the relay, where the test sees every session's index (the
    // direct path keeps its keys and rotates them the same way).
    let rekey = ["--rekey-after", "2", "--no-direct"];
    let (net, _) = overlay(&lab, true, Gso::Cut);
    let t = bridged_lan(&lab, &net, Gso::Cut, &rekey);
    let a = edge(&lab, &net, "a", 101, Gso::Cut, &rekey);
    let b = edge(&lab, &net, "b", 102, Gso::Cut, &rekey);
    assert_ping(&lab, &a.ns, &b.ip);
    assert_ping(&lab, &a.ns, &t.l1.ip);
    assert_ping(&lab, &t.l1.ns, &a.ip);
    let filter = format!("udp dst port {RELAY_PORT}");
    let cap = net.relay_ns.capture_with("eth0", 96, &filter).unwrap();
    let edges = long_transfer(&lab, "A -> B", &a.ns, &b.ns, &b.ip, 5001, 21);
    let bridged = long_transfer(&lab, "L1 -> A", &t.l1.ns, &a.ns, &a.ip, 5002, 22);
    let d = to_relay(&frames_of(&lab, cap, "the relay"));
    assert_rotated(&d, "A -> B", [&a, &b], &edges);
    assert_rotated(&d, "L1 -> A", [&a, &t.bridge], &bridged);
    assert!(
        ping_within(&a.ns, &b.ip, SETTLE) && ping_within(&t.l1.ns, &a.ip, SETTLE),
        "{}",
        lab.logs()
    );
    eprintln!("sec_rekey: {:.2?} in all", start.elapsed());
}

#[test]
fn a_member_refused_by_the_relay_reaches_nobody() {
    let Some(lab) = Lab::new("sec_refuse") else {
        return;
    };
    let start = Instant::now();
    let (mut net, relay_key) = overlay(&lab, true, Gso::Keep);
    let t = bridged_lan(&lab, &net, Gso::Keep, &[]);
    let b = edge(&lab, &net, "b", 102, Gso::Keep, &[]);
    // C joins once with an identity file, which it creates.
    let c_identity = identity(&lab, "c");
    let mut c = edge(&lab, &net, "c", 103, Gso::Keep, &strs(&c_identity));
    assert_ping(&lab, &c.ns, &b.ip);
    let status = c.proc.stop(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "C stopped with {status:?}"
    );
    let out = lanbridge_with_stdin(&["pubkey"], Path::new(&c_identity[1]));
    let pubkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success()
            && pubkey.len() == 64
            && pubkey.chars().all(|ch| ch.is_ascii_hexdigit()),
        "lanbridge pubkey < {} printed {pubkey:?}: {}",
        c_identity[1],
        String::from_utf8_lossy(&out.stderr)
    );

    // The relay refuses C's key from now on.
    let stopped = net.relay.stop(Duration::from_secs(5));
    assert!(stopped.is_some_and(|s| s.success()), "relay: {stopped:?}");
    net.relay = start_relay_with(&net.relay_ns, &relay_key, &["--refuse-member", &pubkey]);
    assert!(
        ping_within(&b.ns, &t.l1.ip, RECONNECT),
        "B and the bridge did not come back:\n{}",
        lab.logs()
    );
    let watch_lan = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    let watch_b = b.ns.capture("tap0").unwrap();
    c.restart();
    assert_eq!(ping_count(&c.ns, &b.ip, 5, &[]), 0, "refused C reached B");
    assert_eq!(
        ping_count(&c.ns, &t.l1.ip, 5, &[]),
        0,
        "refused C reached L1"
    );
    assert!(!c.ns.arping("tap0", &b.ip), "B answered refused C's ARP");
    assert_eq!(ping_count(&b.ns, &t.l1.ip, 5, &[]), 5, "{}", lab.logs());
    // Sent by C: its MAC as source or ARP sender, its IP as source (B's
    // own ARP requests for C, which the capture also sees, are not).
    let from_c = |f: &Frame| {
        sent_by_ip(f, &c.ip) || sent_by_mac(f, c.mac) || ipv6_src_iid(f, eui64_iid(c.mac))
    };
    for (what, frames) in [
        ("the LAN", frames_of(&lab, watch_lan, "the LAN")),
        ("B's TAP", frames_of(&lab, watch_b, "B's TAP")),
    ] {
        let bad: Vec<&Frame> = frames.iter().filter(|f| from_c(f)).collect();
        assert!(
            bad.is_empty(),
            "{what}: {} of {} frames from refused C, e.g. {:02x?}",
            bad.len(),
            frames.len(),
            bad[0].data
        );
    }

    // The refusal is of C's key, not of its host or of the network key: C
    // with a new (ephemeral) identity joins from the same address.
    let stopped = c.proc.stop(Duration::from_secs(5));
    assert!(stopped.is_some_and(|s| s.success()), "C: {stopped:?}");
    c.proc = spawn_edge(&c.ns, &net.key, &c.ip, c.mac, &[]);
    wait_for_tap(&c.ns, &c.proc);
    assert_ping(&lab, &c.ns, &b.ip);
    assert_ping(&lab, &c.ns, &t.l1.ip);
    eprintln!("sec_refuse: {:.2?} in all", start.elapsed());
}
