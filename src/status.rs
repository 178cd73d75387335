//! What a running lanbridge tells an operator: the [`Status`] snapshot, and
//! its rendering as readable tables.
//!
//! A driver builds a `Status` from the state it owns (see
//! [`crate::control`]), serves it as JSON on its control socket and, with
//! `--metrics`, renders it as Prometheus text ([`crate::metrics`]). The JSON
//! field names are a stable interface: snake_case, durations in seconds
//! (`f64`, fields ending in `_seconds`), counters as `u64`, addresses as
//! strings. New fields may be added; none are renamed or removed.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::core::{
    client::Client,
    drop::{DropCounters, DropReason},
};

/// The role of a lanbridge process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `lanbridge relay`.
    Relay,
    /// `lanbridge edge`.
    Edge,
    /// `lanbridge bridge`.
    Bridge,
}

impl Role {
    /// The role's name, as on the command line and in socket names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Relay => "relay",
            Role::Edge => "edge",
            Role::Bridge => "bridge",
        }
    }
}

/// A snapshot of one running process. Exactly one of `relay`, `edge` and
/// `bridge` is present, the one named by `role`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Which role the process runs.
    pub role: Role,
    /// The lanbridge version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The process id.
    pub pid: u32,
    /// Time since the process started its role.
    pub uptime_seconds: f64,
    /// Drops per reason (every reason, zero included), summed over the
    /// process's components.
    pub drops: BTreeMap<String, u64>,
    /// Relay details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayStatus>,
    /// Edge details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeStatus>,
    /// Bridge details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeStatus>,
}

/// A relay's networks, peers and counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// The UDP address it listens on.
    pub listen: String,
    /// Every network served, with its peer count.
    pub networks: Vec<NetworkStatus>,
    /// Registered peers of every network.
    pub peers: Vec<PeerStatus>,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams sent (a forward counts once per destination).
    pub datagrams_sent: u64,
    /// Registrations (including re-registrations after a timeout).
    pub registrations: u64,
    /// Peers forgotten for silence.
    pub timeouts: u64,
    /// Uplink handshakes (joins and key rotations).
    #[serde(default)]
    pub handshakes: u64,
    /// Cookie replies sent (handshake load).
    #[serde(default)]
    pub cookies_sent: u64,
    /// True while initiations need a cookie.
    #[serde(default)]
    pub cookie_mode: bool,
}

/// One network a relay serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// The network id (16 hex digits, derived from the key).
    pub id: String,
    /// Registered peers.
    pub peers: u64,
}

/// One registered peer of a relay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its network id.
    pub network: String,
    /// Its member id (16 hex digits, from its static key).
    pub member: String,
    /// Its static public key (64 hex digits; what `--refuse-member` takes).
    pub public_key: String,
    /// The underlay address its datagrams come from.
    pub address: String,
    /// Age of its uplink session keys (they rotate every two minutes).
    pub session_age_seconds: f64,
    /// Uplink handshakes it completed (the first, then one per rotation).
    pub handshakes: u64,
    /// Time since it was last heard.
    pub idle_seconds: f64,
    /// Datagrams received from it.
    pub datagrams_received: u64,
}

/// An edge: its TAP and its relay connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeStatus {
    /// The TAP's name.
    pub tap: String,
    /// The TAP's MAC.
    pub mac: String,
    /// The relay connection.
    pub uplink: UplinkStatus,
}

/// A connection to a relay (edge, or bridge with `--relay`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// The relay's address.
    pub relay: String,
    /// Whether the relay has acknowledged our registration lately.
    pub registered: bool,
    /// Whether frames go as RoutedFrame, which the relay forwards without
    /// decrypting (every peer of the network takes them).
    #[serde(default)]
    pub offload: bool,
    /// Times we (re-)registered.
    pub registrations: u64,
    /// Frames received from the relay and delivered.
    pub frames_in: u64,
    /// Frames sealed and sent to the relay.
    pub frames_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Super-frames rebuilt from received segments and delivered whole.
    #[serde(default)]
    pub offload_frames_in: u64,
    /// Super-frames from the local device, sent as one datagram per segment.
    #[serde(default)]
    pub offload_frames_out: u64,
    /// TCP SYNs whose MSS was lowered to fit one datagram.
    #[serde(default)]
    pub mss_clamped: u64,
    /// Our member id (16 hex digits, from our static key).
    #[serde(default)]
    pub member: String,
    /// Our static public key (64 hex digits).
    #[serde(default)]
    pub public_key: String,
    /// Age of the keys of the session with the relay.
    #[serde(default)]
    pub uplink_age_seconds: Option<f64>,
    /// Handshakes with the relay (joins and key rotations).
    #[serde(default)]
    pub uplink_handshakes: u64,
    /// Paths to members that changed, relay to direct or back.
    #[serde(default)]
    pub path_changes: u64,
    /// Handshakes with members, either side.
    #[serde(default)]
    pub member_handshakes: u64,
    /// Member handshakes that replaced working keys (rotations).
    #[serde(default)]
    pub rekeys: u64,
    /// The other members of the network, as the relay lists them.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
}

/// Another member of the network, as a member sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its member id.
    pub id: String,
    /// Its static public key.
    pub public_key: String,
    /// Age of the session keys in use with it, if there is a session.
    pub session_age_seconds: Option<f64>,
    /// Handshakes with it.
    pub handshakes: u64,
    /// MACs it owns in our switch table.
    pub macs: u64,
    /// Frames received from it.
    pub frames_in: u64,
    /// Frames sent to it.
    pub frames_out: u64,
    /// `direct` (frames go straight to it) or `relay`.
    pub path: String,
    /// Its address on the direct path.
    pub path_address: Option<String>,
    /// Round trip of the direct path, milliseconds.
    pub path_rtt_ms: Option<f64>,
    /// Seconds since the path last changed (none: it never did).
    pub path_changed_seconds: Option<f64>,
}

impl UplinkStatus {
    /// From a member's state and counters.
    pub fn new(relay: String, client: &Client, now: Instant) -> UplinkStatus {
        let stats = client.stats();
        UplinkStatus {
            relay,
            registered: client.is_registered(),
            offload: client.offload_ok(),
            member: client.identity().id().to_string(),
            public_key: client.identity().public_hex(),
            uplink_age_seconds: client.uplink_age(now).map(secs),
            uplink_handshakes: stats.uplink_handshakes,
            member_handshakes: stats.peer_handshakes,
            rekeys: stats.rekeys,
            path_changes: stats.path_changes,
            members: client
                .peers(now)
                .into_iter()
                .map(|p| MemberStatus {
                    id: p.id.to_string(),
                    public_key: hex(&p.public),
                    session_age_seconds: p.session_age.map(secs),
                    handshakes: p.handshakes,
                    macs: p.macs as u64,
                    frames_in: p.frames_in,
                    frames_out: p.frames_out,
                    path: if p.direct.is_some() {
                        "direct"
                    } else {
                        "relay"
                    }
                    .into(),
                    path_address: p.direct.map(|a| a.to_string()),
                    path_rtt_ms: p.rtt.map(|r| r.as_secs_f64() * 1e3),
                    path_changed_seconds: p.path_changed.map(secs),
                })
                .collect(),
            offload_frames_in: stats.offload_frames_in,
            offload_frames_out: stats.offload_frames_out,
            mss_clamped: stats.mss_clamped,
            registrations: stats.registrations,
            frames_in: stats.frames_in,
            frames_out: stats.frames_out,
            datagrams_in: stats.datagrams_in,
            datagrams_out: stats.datagrams_out,
        }
    }
}

/// A bridge: its NIC, learned tables and translation counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BridgeStatus {
    /// The bridged NIC.
    pub nic: String,
    /// The NIC's MAC (the only one the LAN sees).
    pub mac: String,
    /// The NIC's addresses (the host's own).
    pub host_addresses: Vec<String>,
    /// Virtual hosts' IPs → their MACs, learned from the overlay.
    pub ip_table: Vec<IpMacEntry>,
    /// MACs seen on the LAN.
    pub lan_macs: Vec<AgedEntry>,
    /// IPs seen live on the LAN.
    pub lan_ips: Vec<AgedEntry>,
    /// MACs seen as sources from the overlay: no LAN host may use them
    /// (mirror guard).
    #[serde(default)]
    pub overlay_macs: Vec<AgedEntry>,
    /// The NIC's on-link prefixes, which decide what is learned as live on
    /// the LAN and which claims are probed for.
    #[serde(default)]
    pub on_link: Vec<String>,
    /// Translation counters.
    pub nat: NatCounters,
    /// The relay connection (with `--relay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkStatus>,
    /// The local TAP (with `--tap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// The host-access TAP, unless `--no-host-access`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_tap: Option<String>,
}

/// One IP→MAC entry of a bridge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IpMacEntry {
    /// The virtual host's IP.
    pub ip: String,
    /// Its MAC.
    pub mac: String,
    /// Time since the entry was last refreshed.
    pub age_seconds: f64,
}

/// One address (MAC or IP) with the time since it was last seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgedEntry {
    /// The address.
    pub address: String,
    /// Time since it was last seen.
    pub age_seconds: f64,
}

/// A bridge's translation counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NatCounters {
    /// Frames passed from the LAN to the overlay.
    pub lan_forwarded: u64,
    /// Frames passed from the overlay to the LAN.
    pub overlay_forwarded: u64,
    /// DHCP requests given the broadcast flag.
    pub dhcp_broadcast_set: u64,
    /// IPv6 neighbour-discovery messages rewritten.
    pub ndp_rewritten: u64,
    /// IP→MAC entries evicted because the table was full.
    pub ip_evictions: u64,
    /// LAN MACs evicted because the table was full.
    pub lan_mac_evictions: u64,
    /// LAN IPs evicted because the table was full.
    pub lan_ip_evictions: u64,
    /// Overlay MACs evicted because the table was full.
    #[serde(default)]
    pub overlay_mac_evictions: u64,
    /// Probes for claimed addresses put on the LAN.
    #[serde(default)]
    pub probes_sent: u64,
    /// Claims granted after unanswered probes.
    #[serde(default)]
    pub claims_granted: u64,
    /// Claims refused: a LAN host answered or used the address.
    #[serde(default)]
    pub claims_refused: u64,
    /// Claims being probed for now.
    #[serde(default)]
    pub claims_pending: u64,
    /// Host access: frames from the overlay written into the host TAP.
    #[serde(default)]
    pub overlay_to_host: u64,
    /// Host access: frames from the host TAP passed to the overlay.
    #[serde(default)]
    pub host_to_overlay: u64,
    /// Host access: ARP requests and neighbour solicitations for the host's
    /// addresses answered by the bridge.
    #[serde(default)]
    pub host_answers: u64,
    /// Host access: host routes to virtual addresses through the TAP.
    #[serde(default)]
    pub host_routes: u64,
}

impl Status {
    /// A snapshot of this process with zero uptime (the control server sets
    /// it) and the sum of `drops`; the caller fills in its role's details.
    pub fn new(role: Role, drops: &[&DropCounters]) -> Status {
        let drops = DropReason::ALL
            .iter()
            .map(|&r| (r.as_str().to_string(), drops.iter().map(|c| c.get(r)).sum()))
            .collect();
        Status {
            role,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_seconds: 0.0,
            drops,
            relay: None,
            edge: None,
            bridge: None,
        }
    }
}

/// Seconds as `f64`, for the snapshot.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A duration for people: `0.4s`, `42s`, `3m05s`, `2h03m`, `4d02h`.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".to_string();
    }
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    let s = seconds as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Columns padded to their widest cell, two spaces apart, each line
/// indented by two spaces; `(none)` for no rows.
fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(l, "  {cell:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// `name value` pairs, names padded.
fn pairs(out: &mut String, pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        let _ = writeln!(out, "  {k:<w$}  {v}");
    }
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "\n{title}");
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn uplink_pairs(u: &UplinkStatus) -> Vec<(&'static str, String)> {
    vec![
        ("member", u.member.clone()),
        ("public key", u.public_key.clone()),
        ("relay", u.relay.clone()),
        ("registered", yes_no(u.registered)),
        (
            "relay keys age",
            u.uplink_age_seconds.map_or("-".into(), human_duration),
        ),
        ("super-frames", yes_no(u.offload)),
        ("registrations", u.registrations.to_string()),
        ("relay handshakes", u.uplink_handshakes.to_string()),
        ("member handshakes", u.member_handshakes.to_string()),
        ("rekeys", u.rekeys.to_string()),
        ("path changes", u.path_changes.to_string()),
        ("frames in", u.frames_in.to_string()),
        ("frames out", u.frames_out.to_string()),
        ("super-frames in", u.offload_frames_in.to_string()),
        ("super-frames out", u.offload_frames_out.to_string()),
        ("MSS clamped", u.mss_clamped.to_string()),
        ("datagrams in", u.datagrams_in.to_string()),
        ("datagrams out", u.datagrams_out.to_string()),
    ]
}

/// Renders a snapshot as readable tables, for `lanbridge status`.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    pairs(
        &mut out,
        &[
            ("role", s.role.as_str().to_string()),
            ("version", s.version.clone()),
            ("pid", s.pid.to_string()),
            ("uptime", human_duration(s.uptime_seconds)),
        ],
    );
    if let Some(r) = &s.relay {
        render_relay(&mut out, r);
    }
    if let Some(e) = &s.edge {
        section(&mut out, "edge");
        let mut p = vec![("tap", e.tap.clone()), ("mac", e.mac.clone())];
        p.extend(uplink_pairs(&e.uplink));
        pairs(&mut out, &p);
        render_members(&mut out, &e.uplink);
    }
    if let Some(b) = &s.bridge {
        render_bridge(&mut out, b);
    }
    section(&mut out, "drops");
    let rows: Vec<Vec<String>> = s
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| vec![r.clone(), n.to_string()])
        .collect();
    table(&mut out, &["REASON", "COUNT"], &rows);
    out
}

fn render_relay(out: &mut String, r: &RelayStatus) {
    section(out, &format!("relay on {}", r.listen));
    section(out, "networks");
    let rows: Vec<Vec<String>> = r
        .networks
        .iter()
        .map(|n| vec![n.id.clone(), n.peers.to_string()])
        .collect();
    table(out, &["NETWORK", "PEERS"], &rows);
    section(out, "peers");
    let rows: Vec<Vec<String>> = r
        .peers
        .iter()
        .map(|p| {
            vec![
                p.network.clone(),
                p.member.clone(),
                p.address.clone(),
                human_duration(p.session_age_seconds),
                p.handshakes.to_string(),
                human_duration(p.idle_seconds),
                p.datagrams_received.to_string(),
            ]
        })
        .collect();
    table(
        out,
        &[
            "NETWORK",
            "MEMBER",
            "ADDRESS",
            "KEYS AGE",
            "HANDSHAKES",
            "IDLE",
            "RX",
        ],
        &rows,
    );
    section(out, "counters");
    pairs(
        out,
        &[
            ("datagrams received", r.datagrams_received.to_string()),
            ("datagrams sent", r.datagrams_sent.to_string()),
            ("registrations", r.registrations.to_string()),
            ("handshakes", r.handshakes.to_string()),
            ("timeouts", r.timeouts.to_string()),
            ("cookies sent", r.cookies_sent.to_string()),
            (
                "cookie mode",
                if r.cookie_mode { "on" } else { "off" }.to_string(),
            ),
        ],
    );
}

fn render_bridge(out: &mut String, b: &BridgeStatus) {
    section(out, "bridge");
    let mut p = vec![
        ("nic", b.nic.clone()),
        ("mac", b.mac.clone()),
        ("host addresses", b.host_addresses.join(" ")),
        ("on-link", b.on_link.join(" ")),
    ];
    if let Some(tap) = &b.tap {
        p.push(("tap", tap.clone()));
    }
    pairs(out, &p);
    section(out, "ip → mac (virtual hosts)");
    let rows: Vec<Vec<String>> = b
        .ip_table
        .iter()
        .map(|e| vec![e.ip.clone(), e.mac.clone(), human_duration(e.age_seconds)])
        .collect();
    table(out, &["IP", "MAC", "AGE"], &rows);
    for (title, head, entries) in [
        ("lan macs", "MAC", &b.lan_macs),
        ("lan ips", "IP", &b.lan_ips),
        ("overlay macs (virtual hosts)", "MAC", &b.overlay_macs),
    ] {
        section(out, title);
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| vec![e.address.clone(), human_duration(e.age_seconds)])
            .collect();
        table(out, &[head, "AGE"], &rows);
    }
    section(out, "translation");
    let n = &b.nat;
    pairs(
        out,
        &[
            ("lan → overlay", n.lan_forwarded.to_string()),
            ("overlay → lan", n.overlay_forwarded.to_string()),
            ("dhcp broadcast set", n.dhcp_broadcast_set.to_string()),
            ("ndp rewritten", n.ndp_rewritten.to_string()),
            ("ip evictions", n.ip_evictions.to_string()),
            ("lan mac evictions", n.lan_mac_evictions.to_string()),
            ("lan ip evictions", n.lan_ip_evictions.to_string()),
            ("overlay mac evictions", n.overlay_mac_evictions.to_string()),
            ("probes sent", n.probes_sent.to_string()),
            (
                "claims",
                format!(
                    "{} granted, {} refused, {} pending",
                    n.claims_granted, n.claims_refused, n.claims_pending
                ),
            ),
            (
                "host access",
                match &b.host_tap {
                    Some(tap) => format!(
                        "{tap}: {} routes, {} to host, {} from host, {} answered",
                        n.host_routes, n.overlay_to_host, n.host_to_overlay, n.host_answers
                    ),
                    None => "off".to_string(),
                },
            ),
        ],
    );
    if let Some(u) = &b.uplink {
        section(out, "overlay");
        pairs(out, &uplink_pairs(u));
        render_members(out, u);
    }
}

fn render_members(out: &mut String, u: &UplinkStatus) {
    section(out, "members");
    let rows: Vec<Vec<String>> = u
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.session_age_seconds.map_or("-".into(), human_duration),
                m.handshakes.to_string(),
                m.macs.to_string(),
                m.frames_in.to_string(),
                m.frames_out.to_string(),
                m.path_address
                    .as_deref()
                    .map_or_else(|| m.path.clone(), |a| format!("direct {a}")),
                m.path_rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
                m.path_changed_seconds
                    .map_or("-".into(), |s| format!("{} ago", human_duration(s))),
            ]
        })
        .collect();
    table(
        out,
        &[
            "MEMBER",
            "KEYS AGE",
            "HANDSHAKES",
            "MACS",
            "FRAMES IN",
            "FRAMES OUT",
            "PATH",
            "RTT",
            "CHANGED",
        ],
        &rows,
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixed relay snapshot, shared with the metrics tests.
    pub(crate) fn relay_fixture() -> Status {
        let mut counters = DropCounters::default();
        counters.add(DropReason::Forged);
        counters.add(DropReason::Forged);
        counters.add(DropReason::Replayed);
        let mut s = Status::new(Role::Relay, &[&counters]);
        s.version = "0.1.0".into();
        s.pid = 4242;
        s.uptime_seconds = 3725.5;
        s.relay = Some(RelayStatus {
            listen: "0.0.0.0:7171".into(),
            networks: vec![NetworkStatus {
                id: "0123456789abcdef".into(),
                peers: 2,
            }],
            peers: vec![
                PeerStatus {
                    network: "0123456789abcdef".into(),
                    member: "a1b2c3d4a1b2c3d4".into(),
                    public_key: "a1".repeat(32),
                    address: "172.16.0.10:40000".into(),
                    session_age_seconds: 61.0,
                    handshakes: 2,
                    idle_seconds: 0.25,
                    datagrams_received: 17,
                },
                PeerStatus {
                    network: "0123456789abcdef".into(),
                    member: "0f0e0d0c0f0e0d0c".into(),
                    public_key: "0f".repeat(32),
                    address: "172.16.0.11:40001".into(),
                    session_age_seconds: 3.0,
                    handshakes: 1,
                    idle_seconds: 12.0,
                    datagrams_received: 5,
                },
            ],
            datagrams_received: 30,
            datagrams_sent: 25,
            registrations: 2,
            timeouts: 0,
            handshakes: 3,
            cookies_sent: 0,
            cookie_mode: false,
        });
        s
    }

    /// A fixed bridge snapshot (with a relay uplink).
    pub(crate) fn bridge_fixture() -> Status {
        let mut counters = DropCounters::default();
        counters.add(DropReason::NotForUs);
        counters.add(DropReason::RaGuard);
        let mut s = Status::new(Role::Bridge, &[&counters]);
        s.version = "0.1.0".into();
        s.pid = 7;
        s.uptime_seconds = 42.0;
        s.bridge = Some(BridgeStatus {
            nic: "eth0".into(),
            mac: "02:00:00:00:00:02".into(),
            host_addresses: vec!["192.168.50.2".into()],
            ip_table: vec![IpMacEntry {
                ip: "192.168.50.101".into(),
                mac: "02:00:00:00:32:65".into(),
                age_seconds: 1.5,
            }],
            lan_macs: vec![AgedEntry {
                address: "02:aa:bb:cc:dd:01".into(),
                age_seconds: 2.0,
            }],
            lan_ips: vec![],
            overlay_macs: vec![AgedEntry {
                address: "02:00:00:00:32:65".into(),
                age_seconds: 1.5,
            }],
            on_link: vec!["192.168.50.2/24".into()],
            nat: NatCounters {
                lan_forwarded: 10,
                overlay_forwarded: 9,
                ip_evictions: 1,
                probes_sent: 2,
                claims_granted: 1,
                ..NatCounters::default()
            },
            uplink: Some(UplinkStatus {
                relay: "172.16.0.1:7171".into(),
                registered: true,
                registrations: 1,
                frames_in: 9,
                frames_out: 10,
                datagrams_in: 12,
                datagrams_out: 13,
                offload: true,
                offload_frames_in: 2,
                offload_frames_out: 3,
                mss_clamped: 1,
                member: "5e1f5e1f5e1f5e1f".into(),
                public_key: "5e".repeat(32),
                uplink_age_seconds: Some(42.0),
                uplink_handshakes: 2,
                member_handshakes: 3,
                rekeys: 1,
                path_changes: 2,
                members: vec![MemberStatus {
                    id: "a1b2c3d4a1b2c3d4".into(),
                    public_key: "a1".repeat(32),
                    session_age_seconds: Some(17.5),
                    handshakes: 2,
                    macs: 1,
                    frames_in: 9,
                    frames_out: 10,
                    path: "direct".into(),
                    path_address: Some("203.0.113.9:40000".into()),
                    path_rtt_ms: Some(12.25),
                    path_changed_seconds: Some(30.0),
                }],
            }),
            tap: None,
            host_tap: Some("lbh-eth0".into()),
        });
        s
    }

    /// A fixed edge snapshot.
    pub(crate) fn edge_fixture() -> Status {
        let mut s = Status::new(Role::Edge, &[]);
        s.version = "0.1.0".into();
        s.pid = 9;
        s.uptime_seconds = 5.0;
        s.edge = Some(EdgeStatus {
            tap: "tap0".into(),
            mac: "02:00:00:00:10:02".into(),
            uplink: UplinkStatus {
                relay: "172.16.0.1:7171".into(),
                registered: false,
                registrations: 0,
                frames_in: 0,
                frames_out: 3,
                datagrams_in: 0,
                datagrams_out: 4,
                offload: false,
                offload_frames_in: 0,
                offload_frames_out: 0,
                mss_clamped: 0,
                member: "0e0e0e0e0e0e0e0e".into(),
                public_key: "0e".repeat(32),
                uplink_age_seconds: None,
                uplink_handshakes: 0,
                member_handshakes: 0,
                rekeys: 0,
                path_changes: 0,
                members: Vec::new(),
            },
        });
        s
    }

    #[test]
    fn relay_table() {
        insta::assert_snapshot!(render(&relay_fixture()));
    }

    #[test]
    fn bridge_table() {
        insta::assert_snapshot!(render(&bridge_fixture()));
    }

    #[test]
    fn edge_table_without_drops_says_none() {
        insta::assert_snapshot!(render(&edge_fixture()));
    }

    #[test]
    fn json_round_trips_with_stable_top_level_keys() {
        for s in [relay_fixture(), bridge_fixture(), edge_fixture()] {
            let text = serde_json::to_string(&s).unwrap();
            let back: Status = serde_json::from_str(&text).unwrap();
            assert_eq!(back, s);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            keys.sort();
            let mut want = vec![
                "drops",
                "pid",
                "role",
                "uptime_seconds",
                "version",
                s.role.as_str(),
            ];
            want.sort();
            assert_eq!(keys, want);
            assert_eq!(v["drops"].as_object().unwrap().len(), DropReason::ALL.len());
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(0.4), "0.4s");
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(185.0), "3m05s");
        assert_eq!(human_duration(7380.0), "2h03m");
        assert_eq!(human_duration(2.0 * 86400.0 + 7200.0), "2d02h");
        assert_eq!(human_duration(f64::NAN), "?");
    }
}
