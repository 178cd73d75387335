//! The driver side of a relay connection, shared by `edge` and `bridge`: a
//! UDP socket, the [`Client`] state machine, and the logging around it.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Context;
use tracing::{debug, info, trace, warn};

use crate::{
    cli::TuningArgs,
    core::{
        client::{Client, ClientConfig, ClientEvent, MemberEvent},
        drop::DropReason,
        offload::VnetHdr,
        proto::{
            session::{Timers, WallClock},
            Identity,
        },
        wire::NetworkKey,
    },
    io::{
        plain,
        udp::{burst_step, Received, SendBatch, Socket, RECV_BURST},
    },
    report::DropReport,
    status::UplinkStatus,
};

/// Resolves `HOST:PORT` to one address, preferring IPv4.
pub async fn resolve_relay(relay: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(relay)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve relay address {relay}: {}", plain(&e)))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("relay address {relay} resolves to nothing"))
}

/// How long the relay may be silent before its name is looked up again, and
/// how often at most.
const LOOKUP_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// A lookup that takes longer is abandoned (the event loop waits for it).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How often our own addresses are read again.
const ENDPOINTS_READ_EVERY: Duration = Duration::from_secs(10);

/// This host's addresses of one family (with `port`), other than loopback,
/// IPv6 link-local and those of `overlay_ifaces`; and the networks of
/// `overlay_ifaces` (address and prefix length).
fn local_endpoints(
    port: u16,
    ipv4: bool,
    overlay_ifaces: &[String],
) -> (Vec<SocketAddr>, Vec<(IpAddr, u8)>) {
    let (mut endpoints, mut overlay) = (Vec::new(), Vec::new());
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return (endpoints, overlay);
    };
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let (ip, prefix) = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
            (Some(v4), _) => {
                let mask = mask.as_sockaddr_in().map_or(0, |m| m.ip().to_bits());
                (IpAddr::V4(v4.ip()), mask.count_ones() as u8)
            }
            (_, Some(v6)) => {
                let mask = mask.as_sockaddr_in6().map_or(0, |m| m.ip().to_bits());
                (IpAddr::V6(v6.ip()), mask.count_ones() as u8)
            }
            _ => continue,
        };
        if overlay_ifaces.contains(&a.interface_name) {
            overlay.push((ip, prefix));
            continue;
        }
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if ip.is_ipv4() == ipv4 && !ip.is_loopback() && !link_local {
            endpoints.push(SocketAddr::new(ip, port));
        }
    }
    endpoints.sort();
    endpoints.dedup();
    // Networks routed through the overlay (a site behind a virtual host,
    // a default route over it): a member's address there would carry the
    // overlay inside itself.
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    overlay.extend(overlay_routes(
        &read("/proc/net/route"),
        &read("/proc/net/ipv6_route"),
        overlay_ifaces,
    ));
    (endpoints, overlay)
}

/// The destinations (address and prefix length) of the routes through
/// `ifaces`, from the text of `/proc/net/route` and `/proc/net/ipv6_route`.
fn overlay_routes(v4: &str, v6: &str, ifaces: &[String]) -> Vec<(IpAddr, u8)> {
    let mut routes = Vec::new();
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ...: the
    // addresses as host-order (little-endian) hex.
    for line in v4.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dst), Some(mask)) = (f.first(), f.get(1), f.get(7)) else {
            continue;
        };
        let (Ok(dst), Ok(mask)) = (u32::from_str_radix(dst, 16), u32::from_str_radix(mask, 16))
        else {
            continue;
        };
        if ifaces.iter().any(|i| i == iface) {
            let ip = std::net::Ipv4Addr::from(dst.to_le_bytes());
            routes.push((IpAddr::V4(ip), mask.count_ones() as u8));
        }
    }
    // dst prefix-len src src-len next-hop metric refcnt use flags iface.
    for line in v6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dst), Some(len), Some(iface)) = (f.first(), f.get(1), f.get(9)) else {
            continue;
        };
        let (Ok(dst), Ok(len)) = (u128::from_str_radix(dst, 16), u8::from_str_radix(len, 16))
        else {
            continue;
        };
        if ifaces.iter().any(|i| i == iface) {
            routes.push((IpAddr::V6(std::net::Ipv6Addr::from(dst)), len.min(128)));
        }
    }
    routes
}

/// A connection to the relay.
pub struct Uplink {
    client: Client,
    socket: Socket,
    relay: SocketAddr,
    /// The relay as the user gave it (a name is looked up again when the
    /// relay stops answering: it may have moved).
    name: String,
    unregistered_since: Option<Instant>,
    last_lookup: Instant,
    failed_sends: u64,
    /// The datagrams of one frame, sent together.
    batch: SendBatch,
    was_registered: bool,
    drops: DropReport,
    /// Devices whose networks the overlay itself carries: their addresses
    /// are never direct paths.
    overlay_ifaces: Vec<String>,
    /// When our own addresses were last read.
    endpoints_read: Option<Instant>,
}

impl Uplink {
    /// Resolves the relay and opens a socket; registration starts at the
    /// first [`Uplink::poll`].
    pub async fn connect(
        key: &NetworkKey,
        identity: Identity,
        relay: &str,
        tuning: &TuningArgs,
    ) -> anyhow::Result<Uplink> {
        let name = relay.to_string();
        let relay = resolve_relay(relay).await?;
        let local: SocketAddr = if relay.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = Socket::bind(local, false).await?;
        let config = ClientConfig {
            max_datagram: usize::from(tuning.max_datagram),
            offload: !tuning.no_offload,
            clamp_mss: !tuning.no_mss_clamp,
            direct: !tuning.no_direct,
            timers: Timers::with_rekey_after(Duration::from_secs(tuning.rekey_after)),
            ..ClientConfig::default()
        };
        let now = Instant::now();
        let client = Client::new(config, key, identity, relay, now, WallClock::system(now));
        Ok(Uplink {
            client,
            socket,
            relay,
            name,
            unregistered_since: None,
            last_lookup: Instant::now(),
            failed_sends: 0,
            batch: SendBatch::default(),
            was_registered: false,
            drops: DropReport::new("datagrams from the relay", Instant::now()),
            overlay_ifaces: Vec::new(),
            endpoints_read: None,
        })
    }

    /// Names the devices whose networks the overlay carries (the TAP, the
    /// bridged NIC): their addresses are not offered to other members as
    /// direct paths, and members' addresses within their networks are not
    /// probed.
    pub fn set_overlay_ifaces(&mut self, names: Vec<String>) {
        self.overlay_ifaces = names;
        self.endpoints_read = None;
    }

    /// Reads our own addresses again (every [`ENDPOINTS_READ_EVERY`]) and
    /// tells the client.
    fn read_endpoints(&mut self, now: Instant) {
        if self
            .endpoints_read
            .is_some_and(|t| now.saturating_duration_since(t) < ENDPOINTS_READ_EVERY)
        {
            return;
        }
        self.endpoints_read = Some(now);
        let port = match self.socket.local_addr() {
            Ok(a) => a.port(),
            Err(_) => return,
        };
        let (endpoints, overlay) =
            local_endpoints(port, self.relay.is_ipv4(), &self.overlay_ifaces);
        self.client.set_local_endpoints(endpoints, overlay);
    }

    /// The relay's address.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// The state machine, for status and counters.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The connection's part of a status snapshot.
    pub fn status(&self) -> UplinkStatus {
        UplinkStatus::new(self.relay.to_string(), &self.client, Instant::now())
    }

    /// Waits for a datagram or a GRO batch of them (see
    /// [`Received::datagrams`]); `buf` should hold 64 KiB.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.socket.recv(buf).await
    }

    /// Seals a local frame, with the offload metadata its device gave
    /// (`VnetHdr::NONE` for a plain frame), and sends it to the relay: a
    /// super-frame goes as one datagram per segment
    /// ([`Client::handle_frame`]), in one UDP GSO send where it can.
    // HOT PATH
    pub fn send_frame(&mut self, hdr: &VnetHdr, frame: &mut [u8], mtu: usize) {
        self.client.handle_frame(Instant::now(), hdr, frame, mtu);
        self.transmit();
    }

    /// Sends what the state machine has to send: runs of equal-sized
    /// datagrams leave in one UDP GSO send.
    // HOT PATH
    fn transmit(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            self.failed_sends +=
                self.batch
                    .push(&self.socket, t.contents, t.destination, None) as u64;
        }
        self.failed_sends += self.batch.flush(&self.socket) as u64;
    }

    /// Handles one received datagram; frames it completes go to `deliver`
    /// with their offload metadata, now or when the burst ends.
    // HOT PATH
    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) {
        match self.client.handle_datagram(now, from, datagram, deliver) {
            ClientEvent::Drop(reason) => trace!(%from, %reason, "dropped datagram"),
            ClientEvent::Frame | ClientEvent::Registered | ClientEvent::Nothing => {}
        }
        self.transmit();
    }

    /// Handles a receive burst: `received` (what [`Uplink::recv`] put in
    /// `buf`), then what is already queued (up to [`RECV_BURST`] receives,
    /// into `buf`), then delivers what the coalescer holds, so that segments
    /// that arrived together reach `deliver` as one super-frame.
    // HOT PATH
    pub fn handle_burst(
        &mut self,
        now: Instant,
        mut received: Received,
        buf: &mut [u8],
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) {
        for more in (0..RECV_BURST).rev() {
            for datagram in received.datagrams(buf) {
                self.handle_datagram(now, received.from, datagram, deliver);
            }
            if more == 0 {
                break;
            }
            match burst_step(self.socket.try_recv(buf)) {
                Some(r) => received = r,
                None => break,
            }
        }
        self.client.flush(deliver);
    }

    /// Runs the client's timers; returns when to call again. While the
    /// relay doesn't answer, its name is looked up again now and then.
    pub async fn poll(&mut self, now: Instant) -> Instant {
        if self.client.is_registered() {
            self.unregistered_since = None;
        } else {
            let since = *self.unregistered_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= LOOKUP_AGAIN_AFTER
                && now.saturating_duration_since(self.last_lookup) >= LOOKUP_AGAIN_AFTER
            {
                self.last_lookup = now;
                self.lookup_again().await;
            }
        }
        self.read_endpoints(now);
        self.client.handle_timeout(now);
        self.transmit();
        self.drops.maybe_log(now, &self.client.stats().drops);
        self.client.poll_timeout()
    }

    /// Looks the relay's name up again; follows it if it moved (within the
    /// address family of our socket). An IP literal never moves.
    async fn lookup_again(&mut self) {
        if self.name.parse::<SocketAddr>().is_ok() {
            return;
        }
        let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(&self.name));
        let addrs: Vec<SocketAddr> = match lookup.await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                debug!("cannot look up {} again: {}", self.name, plain(&e));
                return;
            }
            Err(_) => {
                debug!("looking up {} again timed out", self.name);
                return;
            }
        };
        if addrs.contains(&self.relay) {
            return;
        }
        if let Some(addr) = addrs.iter().find(|a| a.is_ipv4() == self.relay.is_ipv4()) {
            info!(relay = %self.name, from = %self.relay, to = %addr, "the relay moved; following it");
            self.relay = *addr;
            self.client.set_relay(*addr);
        }
    }

    /// Counts frames the driver could not deliver locally.
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        self.client.count_drops(reason, n);
    }

    /// Call after every event: logs registration changes and counts failed
    /// sends.
    pub fn after_event(&mut self) {
        let registered = self.client.is_registered();
        if registered != self.was_registered {
            self.was_registered = registered;
            if registered {
                info!(relay = %self.relay, "registered with relay");
            } else {
                warn!(relay = %self.relay, "lost the relay, registering again");
            }
        }
        while let Some(event) = self.client.poll_event() {
            match event {
                MemberEvent::PeerUp(member) => info!(%member, "session with member up"),
                MemberEvent::PeerLeft(member) => info!(%member, "member left the network"),
                MemberEvent::MacTaken { mac, owner, by } => warn!(
                    %mac, %owner, %by,
                    "a member used a MAC another member owns; its frames with it are dropped"
                ),
                MemberEvent::PathDirect { member, addr, rtt } => info!(
                    %member, %addr, rtt_ms = rtt.as_secs_f64() * 1e3,
                    "direct path to member"
                ),
                MemberEvent::PathRelay {
                    member,
                    idle: false,
                } => warn!(
                    %member,
                    "direct path to member stopped answering; through the relay again"
                ),
                MemberEvent::PathRelay { member, idle: true } => debug!(
                    %member,
                    "no frames with member for a minute; through the relay again"
                ),
                MemberEvent::OtherVersion(version) => warn!(
                    relay = %self.relay,
                    "the relay speaks protocol version {version}; this member speaks version 2 \
                     (upgrade the relay): its datagrams are dropped"
                ),
            }
        }
        if self.failed_sends > 0 {
            debug!(count = self.failed_sends, "UDP sends failed");
            let failed = std::mem::take(&mut self.failed_sends);
            self.client.count_drops(DropReason::SendFailed, failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_through_the_overlay_are_read_from_proc() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  tap0\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                  tap0\t00000A0A\t650000C0\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                  garbage line\n";
        let v6 = "20010db8000000000000000000000000 20 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 tap0\n\
                  fe800000000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000002 00000000 00000001 eth0\n";
        let got = overlay_routes(v4, v6, &["tap0".to_string()]);
        let want: Vec<(IpAddr, u8)> = vec![
            ("192.168.0.0".parse().unwrap(), 16),
            ("10.10.0.0".parse().unwrap(), 16),
            ("2001:db8::".parse().unwrap(), 32),
        ];
        assert_eq!(got, want);
        assert!(overlay_routes("", "", &["tap0".to_string()]).is_empty());
    }
}
