//! The bridge driver: the LAN through an AF_PACKET socket on one side, the
//! overlay (a relay, or a local TAP) on the other, and the MAC-translation
//! engine ([`Nat`]) between them.
//!
//! LAN → overlay: capture (with a vnet header), translate, then make the
//! frame something any receiver can take: complete a partial checksum, cut a
//! GSO super-frame into MTU-sized segments. Overlay → LAN: translate, prepend
//! an empty vnet header, inject.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use tracing::{debug, info, warn};

use crate::{
    cli::{read_member_key, BridgeArgs},
    control::Ops,
    core::mac::MacAddr,
    core::{
        drop::{DropCounters, DropReason},
        host,
        nat::{LanMeta, Nat, NatConfig, Prefix, Refusal, Verdict},
        offload::{self, VnetHdr},
    },
    host_access::{self, HostAccess},
    identity::load_identity,
    io::{
        netlink::Netlink,
        packet_socket::{Captured, PacketSocket},
        plain,
        tap::{self, Tap},
        udp::Received,
    },
    report::DropReport,
    signals::Shutdown,
    status::{self, AgedEntry, BridgeStatus, IpMacEntry, NatCounters, Role, Status},
    uplink::Uplink,
};

/// How often the NIC's addresses are read again.
const ADDRESS_REFRESH: Duration = Duration::from_secs(2);

/// Where LAN frames go: a relay, or a local TAP.
enum Overlay {
    Relay(Box<Uplink>),
    Tap(Tap),
}

/// Counters of the driver's own (non-translation) drops, and whether the
/// local TAP disappeared.
#[derive(Default)]
struct LocalDrops(DropCounters, bool);

impl Overlay {
    /// Sends a frame, with the offload metadata it was captured with, into
    /// the overlay; what can't take it whole gets it finished (checksum,
    /// segments of at most `mtu`).
    // HOT PATH
    fn send(
        &mut self,
        hdr: &VnetHdr,
        frame: &mut [u8],
        mtu: usize,
        seg_buf: &mut Vec<u8>,
        drops: &mut LocalDrops,
    ) {
        match self {
            Overlay::Relay(uplink) => uplink.send_frame(hdr, frame, mtu),
            Overlay::Tap(tap) => match tap.deliver(hdr, frame, mtu, seg_buf) {
                Ok(Some((reason, n))) => drops.0.add_n(reason, n),
                Ok(None) => {}
                Err(_) => drops.1 = true,
            },
        }
    }
}

/// Runs a bridge until SIGINT/SIGTERM.
pub async fn run(args: BridgeArgs) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::new()?;
    let netlink = Netlink::connect()?;
    let index = netlink.index(&args.iface).await?;
    let (mac, mtu) = netlink.mac_and_mtu(&args.iface).await?;
    let lan = if args.no_host_access {
        PacketSocket::open(&args.iface, index)?
    } else {
        PacketSocket::open_with_host_resolution(&args.iface, index)?
    };
    let mut nat = Nat::new(NatConfig {
        allow_router_advertisements: args.allow_router_advertisements,
        allow_dhcp_servers: args.allow_dhcp_servers,
        nd_inspection: !args.no_nd_inspection,
        host_tap_mac: (!args.no_host_access).then(|| host::tap_mac(mac)),
        ..NatConfig::new(mac)
    });
    let mut host_addrs = Vec::new();
    refresh_addresses(&netlink, index, &args.iface, &mut nat, &mut host_addrs).await?;
    warn_if_forwarding(&args.iface);
    let mut host_access = match nat.config().host_tap_mac {
        Some(t) => {
            let name = args
                .host_tap
                .clone()
                .unwrap_or_else(|| host_access::default_name(&args.iface));
            match HostAccess::open(&netlink, &name, t, mtu, &host_addrs).await {
                Ok(h) => Some(h),
                // The bridge itself still works; only the host stays apart.
                Err(e) => {
                    warn!(
                        "host access is off: {e:#}; this host can't reach the virtual hosts \
                         (--no-host-access silences this)"
                    );
                    nat.set_host_tap_mac(None);
                    None
                }
            }
        }
        None => None,
    };

    let mut overlay = match (&args.relay, &args.tap) {
        (Some(relay), _) => {
            let key_file = args.key_file.as_ref().context("--relay needs --key-file")?;
            let key = read_member_key(key_file)?;
            let identity = load_identity(args.identity_file.as_deref())?;
            if args.identity_file.is_none() {
                info!(
                    "no --identity-file: this bridge's identity is new at every start, and \
                     after a restart the other members take its NIC's MAC from it only once \
                     the relay forgot the old one (20 s)"
                );
            }
            let connect = Uplink::connect(&key, identity, relay, &args.tuning);
            let Some(mut uplink) = shutdown.unless_stopped(connect).await? else {
                return Ok(());
            };
            // The LAN's network is the overlay's: never a direct path.
            let mut bridged = vec![args.iface.clone()];
            bridged.extend(host_access.as_ref().map(|h| h.tap().name().to_string()));
            uplink.set_overlay_ifaces(bridged);
            Overlay::Relay(Box::new(uplink))
        }
        (None, Some(name)) => {
            let tap = Tap::open(name, !args.tuning.no_offload)?;
            let tap_index = netlink.index(tap.name()).await?;
            netlink
                .configure(tap_index, tap.name(), None, Some(mtu))
                .await?;
            Overlay::Tap(tap)
        }
        (None, None) => anyhow::bail!("give --relay HOST:PORT or --tap NAME"),
    };
    let ops = Ops::start(Role::Bridge, &args.ops).await?;
    match &overlay {
        Overlay::Relay(u) => {
            info!(iface = %args.iface, %mac, mtu, relay = %u.relay(), member = %u.client().identity().id(), "bridge running")
        }
        Overlay::Tap(t) => info!(iface = %args.iface, %mac, mtu, tap = t.name(), "bridge running"),
    }

    // Frames arrive with a vnet header in front; GRO can merge up to 64 KiB
    // (more with BIG TCP, which arrives truncated and is dropped).
    let mut lan_buf = vec![0u8; VnetHdr::LEN + 65536 + 4096];
    let mut out_buf = vec![0u8; VnetHdr::LEN + 65536 + 4096];
    let mut seg_buf = Vec::with_capacity(2048);
    let mut ovl_buf = vec![0u8; 65536 + 64];
    let mut host_buf = vec![0u8; 65536 + 64];
    let mut local = LocalDrops::default();
    let mut nat_drops = DropReport::new("frames", Instant::now());
    let mut local_drops = DropReport::new("frames (bridge I/O)", Instant::now());
    let mut next_poll = Instant::now();
    let mut refresh = tokio::time::interval(ADDRESS_REFRESH);
    let max_frame = mtu as usize + 14 + 4;
    let mut warned_too_big = false;
    let mut refusal_log = RateLimit::default();

    loop {
        // The uplink's timers, or the engine's (a probe, a grant), whichever
        // comes first.
        let wake = nat.next_deadline().map_or(next_poll, |t| t.min(next_poll));
        let sleep = tokio::time::sleep_until(wake.into());
        tokio::select! {
            sig = shutdown.recv() => {
                info!("{sig}: bridge stopping");
                break;
            }
            r = lan.recv(&mut lan_buf) => {
                let Captured { len: n, pkt_type, vlan } = match r {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        local.0.add(DropReason::TooBig);
                        continue;
                    }
                    // The link went down (cable, Wi-Fi roaming): the socket
                    // reports it once and captures again when it comes back.
                    Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                        warn!("{} went down; waiting for it to come back", args.iface);
                        continue;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot read from {}", args.iface));
                    }
                };
                // HOT PATH
                let now = Instant::now();
                let Ok(hdr) = VnetHdr::parse(&lan_buf[..n]) else {
                    local.0.add(DropReason::Malformed);
                    continue;
                };
                let frame = &mut lan_buf[VnetHdr::LEN..n];
                let meta = LanMeta { pkt_type, csum_partial: hdr.needs_csum(), vlan };
                if nat.handle_lan(now, meta, frame) != Verdict::Forward {
                    continue;
                }
                overlay.send(&hdr, frame, mtu as usize, &mut seg_buf, &mut local);
            }
            r = host_recv(host_access.as_ref(), &mut host_buf) => {
                let n = match r {
                    Ok((_, n)) => n,
                    Err(e) if tap::is_gone(&e) => {
                        anyhow::bail!("the host-access TAP disappeared: {}", plain(&e));
                    }
                    Err(e) => {
                        debug!("host TAP recv: {}", plain(&e));
                        continue;
                    }
                };
                let frame = &mut host_buf[..n];
                if nat.handle_host(Instant::now(), frame) == Verdict::Forward {
                    overlay.send(&VnetHdr::NONE, frame, mtu as usize, &mut seg_buf, &mut local);
                }
            }
            r = overlay_recv(&overlay, &mut ovl_buf) => {
                let now = Instant::now();
                let (received, tap_hdr) = match (r, &overlay) {
                    (Ok(v), _) => v,
                    (Err(e), Overlay::Tap(t)) if tap::is_gone(&e) => return Err(t.gone_error().into()),
                    // A vnet header the kernel should never write.
                    (Err(e), Overlay::Tap(_)) if e.kind() == std::io::ErrorKind::InvalidData => {
                        local.0.add(DropReason::Malformed);
                        continue;
                    }
                    (Err(e), _) => {
                        debug!("overlay recv: {}", plain(&e));
                        continue;
                    }
                };
                // HOT PATH: one batch (a GRO burst) at a time, so that the
                // segments in it are put back together before the LAN.
                let mut to_lan = |hdr: &VnetHdr, frame: &[u8]| {
                    // HOT PATH
                    if frame.len() > max_frame && hdr.gso_type == 0 {
                        if !warned_too_big {
                            warned_too_big = true;
                            warn!(
                                "dropped a {}-byte frame from the overlay: larger than {}'s MTU \
                                 of {mtu}; give the virtual hosts the LAN's MTU (repeats are \
                                 counted as 'too_big')",
                                frame.len(),
                                args.iface
                            );
                        }
                        local.0.add(DropReason::TooBig);
                        return;
                    }
                    let Some(out) = out_buf.get_mut(..frame.len()) else {
                        local.0.add(DropReason::TooBig);
                        return;
                    };
                    out.copy_from_slice(frame);
                    match nat.handle_overlay(now, hdr.needs_csum(), out) {
                        Verdict::Forward => {
                            // A super-frame goes out whole; the kernel segments it.
                            let result = offload::deliver(hdr, out, true, mtu as usize, &mut seg_buf, &mut |h, f| {
                                if lan.try_send_offload(h, f).is_err() {
                                    local.0.add(DropReason::SendFailed);
                                }
                            });
                            if let Err(e) = result {
                                local.0.add(e.drop_reason());
                            }
                        }
                        Verdict::ToHost => {
                            if let Some(h) = &host_access {
                                match h.deliver(hdr, out, mtu as usize, &mut seg_buf) {
                                    Ok(Some((reason, n))) => local.0.add_n(reason, n),
                                    Ok(None) => {}
                                    Err(_) => local.0.add(DropReason::SendFailed),
                                }
                            }
                        }
                        // The answer waits in nat.poll_host_reply.
                        Verdict::Answered => {}
                        Verdict::Drop(DropReason::ForHost) if nat.take_for_host_notice() => {
                            warn!(
                                "a virtual host sent a frame to this host itself; an AF_PACKET bridge \
                                 cannot deliver into its own host's stack, so this host and the \
                                 virtual hosts can't talk through {} (host access is off)",
                                args.iface
                            );
                        }
                        Verdict::Drop(
                            DropReason::Spoofed
                            | DropReason::NdInspection
                            | DropReason::RaGuard
                            | DropReason::DhcpSnooping,
                        ) => {
                            if let Some(r) = nat.take_refusal() {
                                if refusal_log.first_in_a_while(r, now) {
                                    log_refusal(&r);
                                }
                            }
                        }
                        Verdict::Drop(_) => {}
                    }
                };
                match &mut overlay {
                    Overlay::Relay(uplink) => {
                        uplink.handle_burst(now, received, &mut ovl_buf, &mut to_lan);
                    }
                    Overlay::Tap(_) => {
                        for datagram in received.datagrams(&ovl_buf) {
                            to_lan(&tap_hdr, datagram);
                        }
                    }
                }
                // A claim in this batch may want its first probe now.
                send_probes(&mut nat, &lan, now, &mut local);
                // Answers given for the host go back into the overlay.
                while let Some(reply) = nat.poll_host_reply() {
                    let mut frame = [0u8; 128];
                    let len = reply.as_bytes().len();
                    frame[..len].copy_from_slice(reply.as_bytes());
                    overlay.send(&VnetHdr::NONE, &mut frame[..len], mtu as usize, &mut seg_buf, &mut local);
                }
                if let Some(h) = &mut host_access {
                    h.sync_routes(&netlink, &nat, &host_addrs).await;
                }
            }
            _ = sleep => {
                let now = Instant::now();
                if now >= next_poll {
                    next_poll = match &mut overlay {
                        Overlay::Relay(uplink) => uplink.poll(now).await,
                        Overlay::Tap(_) => now + Duration::from_secs(1),
                    };
                }
                nat.expire(now);
                send_probes(&mut nat, &lan, now, &mut local);
                if let Some(h) = &mut host_access {
                    h.sync_routes(&netlink, &nat, &host_addrs).await;
                }
                nat_drops.maybe_log(now, nat.counters());
                local_drops.maybe_log(now, &local.0);
            }
            conn = ops.accept() => {
                ops.serve(conn, || snapshot(&nat, &overlay, &local, &args.iface, mac, &host_addrs, host_access.as_ref()));
            }
            _ = refresh.tick() => {
                if let Err(e) = refresh_addresses(&netlink, index, &args.iface, &mut nat, &mut host_addrs).await {
                    warn!("{e:#}");
                }
            }
        }
        if let Overlay::Relay(uplink) = &mut overlay {
            uplink.after_event();
        }
        if let (true, Overlay::Tap(t)) = (local.1, &overlay) {
            return Err(t.gone_error().into());
        }
    }
    Ok(())
}

/// The bridge's status snapshot.
fn snapshot(
    nat: &Nat,
    overlay: &Overlay,
    local: &LocalDrops,
    iface: &str,
    mac: MacAddr,
    host_addrs: &[Prefix],
    host: Option<&HostAccess>,
) -> Status {
    let now = Instant::now();
    let aged = |(a, age): (String, Duration)| AgedEntry {
        address: a,
        age_seconds: status::secs(age),
    };
    let n = nat.stats();
    let (uplink, tap, uplink_drops) = match overlay {
        Overlay::Relay(u) => (Some(u.status()), None, Some(&u.client().stats().drops)),
        Overlay::Tap(t) => (None, Some(t.name().to_string()), None),
    };
    let mut drops = vec![nat.counters(), &local.0];
    drops.extend(uplink_drops);
    let mut s = Status::new(Role::Bridge, &drops);
    s.bridge = Some(BridgeStatus {
        nic: iface.to_string(),
        mac: mac.to_string(),
        host_addresses: host_addrs.iter().map(|p| p.addr().to_string()).collect(),
        ip_table: nat
            .ip_entries(now)
            .map(|e| IpMacEntry {
                ip: e.ip.to_string(),
                mac: e.mac.to_string(),
                age_seconds: status::secs(e.age),
            })
            .collect(),
        lan_macs: nat
            .lan_macs(now)
            .map(|(m, age)| aged((m.to_string(), age)))
            .collect(),
        lan_ips: nat
            .lan_ips(now)
            .map(|(ip, age)| aged((ip.to_string(), age)))
            .collect(),
        overlay_macs: nat
            .overlay_macs(now)
            .map(|(m, age)| aged((m.to_string(), age)))
            .collect(),
        on_link: nat
            .on_link_prefixes()
            .iter()
            .map(Prefix::to_string)
            .collect(),
        nat: NatCounters {
            lan_forwarded: n.lan_forwarded,
            overlay_forwarded: n.overlay_forwarded,
            dhcp_broadcast_set: n.dhcp_broadcast_set,
            ndp_rewritten: n.ndp_rewritten,
            ip_evictions: n.ip_evictions,
            lan_mac_evictions: n.lan_mac_evictions,
            lan_ip_evictions: n.lan_ip_evictions,
            overlay_mac_evictions: n.overlay_mac_evictions,
            probes_sent: n.probes_sent,
            claims_granted: n.claims_granted,
            claims_refused: n.claims_refused,
            claims_pending: nat.pending_claims() as u64,
            overlay_to_host: n.overlay_to_host,
            host_to_overlay: n.host_to_overlay,
            host_answers: n.host_answers,
            host_routes: host.map_or(0, |h| h.routes() as u64),
        },
        uplink,
        tap,
        host_tap: host.map(|h| h.tap().name().to_string()),
    });
    s
}

/// Puts the engine's due probes on the LAN.
fn send_probes(nat: &mut Nat, lan: &PacketSocket, now: Instant, local: &mut LocalDrops) {
    while let Some(probe) = nat.poll_transmit(now) {
        if lan
            .try_send_offload(&VnetHdr::NONE, probe.as_bytes())
            .is_err()
        {
            local.0.add(DropReason::SendFailed);
        }
    }
}

/// Names a frame a guard refused, with the flag that would let it through.
fn log_refusal(r: &Refusal) {
    let (ip, mac) = (r.ip.map(|ip| ip.to_string()), r.mac);
    let ip = ip.as_deref().unwrap_or("-");
    match r.reason {
        DropReason::Spoofed => warn!(
            %ip, virtual_mac = %mac,
            "refused: a virtual host claims an address of this host or of a live LAN host \
             (repeats are counted as 'spoofed')"
        ),
        DropReason::NdInspection => warn!(
            target = %ip, virtual_mac = %mac,
            "refused: a virtual host advertises an address of this host or of a live LAN \
             host (ND inspection; repeats are counted as 'nd_inspection', \
             --no-nd-inspection turns it off)"
        ),
        DropReason::RaGuard => warn!(
            virtual_mac = %mac,
            "dropped a router advertisement or redirect from a virtual host (RA guard; \
             repeats are counted as 'ra_guard', --allow-router-advertisements forwards them)"
        ),
        DropReason::DhcpSnooping => warn!(
            virtual_mac = %mac,
            "dropped a DHCP server message from a virtual host (DHCP snooping; repeats are \
             counted as 'dhcp_snooping', --allow-dhcp-servers forwards them)"
        ),
        other => warn!(virtual_mac = %mac, %ip, "refused ({other})"),
    }
}

/// Remembers when each refusal (guard, MAC, address) was last reported, so
/// a host that keeps trying is named once a minute, not once a frame.
/// Bounded.
#[derive(Default)]
struct RateLimit(HashMap<Refusal, Instant>);

impl RateLimit {
    const EVERY: Duration = Duration::from_secs(60);
    const CAP: usize = 256;

    fn first_in_a_while(&mut self, ip: Refusal, now: Instant) -> bool {
        if let Some(last) = self.0.get(&ip) {
            if now.saturating_duration_since(*last) < Self::EVERY {
                return false;
            }
        }
        if self.0.len() >= Self::CAP {
            self.0
                .retain(|_, t| now.saturating_duration_since(*t) < Self::EVERY);
            if self.0.len() >= Self::CAP {
                return false;
            }
        }
        self.0.insert(ip, now);
        true
    }
}

/// Waits for the next frame from the host-access TAP; never, without one.
async fn host_recv(host: Option<&HostAccess>, buf: &mut [u8]) -> std::io::Result<(VnetHdr, usize)> {
    match host {
        Some(h) => h.tap().recv(buf).await,
        None => std::future::pending().await,
    }
}

/// Waits for the next datagrams (relay) or frame (TAP, with its vnet header).
async fn overlay_recv(overlay: &Overlay, buf: &mut [u8]) -> std::io::Result<(Received, VnetHdr)> {
    match overlay {
        Overlay::Relay(uplink) => Ok((uplink.recv(buf).await?, VnetHdr::NONE)),
        Overlay::Tap(tap) => {
            let (hdr, n) = tap.recv(buf).await?;
            let one = Received {
                len: n,
                segment: n,
                from: ([0, 0, 0, 0], 0).into(),
                local: None,
            };
            Ok((one, hdr))
        }
    }
}

/// Reads the NIC's addresses and hands them, and their prefixes, to the
/// engine when they changed.
async fn refresh_addresses(
    netlink: &Netlink,
    index: u32,
    iface: &str,
    nat: &mut Nat,
    current: &mut Vec<Prefix>,
) -> anyhow::Result<()> {
    let mut prefixes = netlink.addresses(index).await?;
    prefixes.sort();
    if prefixes != *current {
        let addrs: Vec<IpAddr> = prefixes.iter().map(Prefix::addr).collect();
        let v4: Vec<_> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6: Vec<_> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            })
            .collect();
        nat.set_host_addrs(&v4, &v6);
        nat.set_on_link_prefixes(&prefixes);
        let on_link: Vec<String> = nat
            .on_link_prefixes()
            .iter()
            .map(Prefix::to_string)
            .collect();
        info!(%iface, addresses = ?addrs, ?on_link, "host addresses");
        *current = prefixes;
    }
    Ok(())
}

/// With IP forwarding on, the host's kernel sees the frames for virtual IPs
/// too (they are addressed to its MAC) and would route them back out.
fn warn_if_forwarding(iface: &str) {
    let read = |path: String| std::fs::read_to_string(path).map(|s| s.trim() == "1");
    let v4 = read(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding")).unwrap_or(false);
    let v6 = read(format!("/proc/sys/net/ipv6/conf/{iface}/forwarding")).unwrap_or(false);
    if v4 || v6 {
        warn!(
            "IP forwarding is on for {iface}: this host will also route frames meant for \
             virtual hosts (they arrive addressed to its MAC), duplicating or redirecting \
             them; turn it off with sysctl net.ipv4.conf.{iface}.forwarding=0"
        );
    }
}
