//! The relay driver: one UDP socket, the [`core::relay::Relay`] state machine,
//! a one-second timer for expiry, and signals.
//!
//! [`core::relay::Relay`]: crate::core::relay::Relay

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tracing::{info, trace, warn};

use crate::{
    cli::{read_relay_keys, RelayArgs},
    control::Ops,
    core::{
        drop::DropReason,
        proto::RelayKey,
        relay::{Relay, RelayAction, RelayConfig, RelayEvent},
        wire::NetworkId,
    },
    io::udp::{burst_step, SendBatch, Socket, RECV_BURST},
    report::DropReport,
    signals::Shutdown,
    status::{self, NetworkStatus, PeerStatus, RelayStatus, Role, Status},
};

/// Runs a relay until SIGINT/SIGTERM.
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    if args.peer_timeout < 2 * args.keepalive {
        anyhow::bail!(
            "--peer-timeout ({} s) must be at least twice --keepalive ({} s), or peers are \
             forgotten between their keepalives",
            args.peer_timeout,
            args.keepalive
        );
    }
    let keys: Vec<RelayKey> = read_relay_keys(&args.key_files)?;
    let config = RelayConfig {
        keepalive: Duration::from_secs(args.keepalive),
        peer_timeout: Duration::from_secs(args.peer_timeout),
        refuse: args.refuse_members.clone(),
        ..RelayConfig::default()
    };
    let socket = Socket::bind(args.listen, args.listen.ip().is_unspecified()).await?;
    let mut shutdown = Shutdown::new()?;
    let ops = Ops::start(Role::Relay, &args.ops).await?;
    for k in &keys {
        info!(network = %k.network_id(), "serving network");
    }
    let mut relay = Relay::new(config, keys);
    let network_ids = relay.networks();
    info!(listen = %args.listen, "relay running");

    let mut buf = vec![0u8; 65536];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut send_errors = 0u64;
    let mut batch = SendBatch::default();
    let mut drops = DropReport::new("datagrams", Instant::now());
    // On a wildcard socket: the local address each peer sends to, so the
    // relay answers and forwards from it. Only authenticated senders get an
    // entry, and entries of forgotten peers are pruned every second.
    let mut local_of: HashMap<SocketAddr, IpAddr> = HashMap::new();
    loop {
        tokio::select! {
            sig = shutdown.recv() => {
                info!("{sig}: relay stopping");
                break;
            }
            r = socket.recv(&mut buf) => {
                // What is queued now is one burst (see Socket::try_recv):
                // runs of forwards to one peer share GSO sends across it.
                let now = Instant::now();
                let mut r = r;
                for more in (0..RECV_BURST).rev() {
                    let Some(received) = burst_step(r) else {
                        break;
                    };
                    let (from, local) = (received.from, received.local);
                    let mut learned = false;
                    // HOT PATH
                    for datagram in received.datagrams(&buf) {
                        let action = relay.handle_datagram(now, from, datagram);
                        if !learned && matches!(action, RelayAction::Forward(..) | RelayAction::Reply(_)) {
                            // Authenticated: answer and forward from where it came.
                            if let Some(local) = local {
                                local_of.insert(from, local);
                            }
                            learned = true;
                        }
                        match action {
                            // A run of forwards to one peer leaves in one GSO send.
                            RelayAction::Forward(to, bytes) => {
                                let from_ip = local_of.get(&to).copied();
                                send_errors += batch.push(&socket, bytes, to, from_ip) as u64;
                            }
                            RelayAction::Reply(bytes) => {
                                send_errors += batch.flush(&socket) as u64;
                                if socket.try_send(bytes, from, local).is_err() {
                                    send_errors += 1;
                                }
                            }
                            RelayAction::Drop(reason) => trace!(%from, %reason, "dropped datagram"),
                        }
                    }
                    if more == 0 {
                        break;
                    }
                    r = socket.try_recv(&mut buf);
                }
                send_errors += batch.flush(&socket) as u64;
            }
            conn = ops.accept() => {
                ops.serve(conn, || snapshot(&relay, &network_ids, &args.listen.to_string()));
            }
            _ = tick.tick() => {
                let now = Instant::now();
                relay.handle_timeout(now);
                if !local_of.is_empty() {
                    let live: HashSet<SocketAddr> = relay.peers(now).iter().map(|p| p.addr).collect();
                    local_of.retain(|addr, _| live.contains(addr));
                }
                drops.maybe_log(now, &relay.stats().drops);
            }
        }
        while let Some((to, bytes)) = relay.poll_transmit() {
            if socket
                .try_send(&bytes, to, local_of.get(&to).copied())
                .is_err()
            {
                send_errors += 1;
            }
        }
        while let Some(event) = relay.poll_event() {
            match event {
                RelayEvent::Joined {
                    network,
                    member,
                    addr,
                } => info!(%network, %member, %addr, "member joined"),
                RelayEvent::Left {
                    network,
                    member,
                    addr,
                } => info!(%network, %member, %addr, "member left (silent, or its keys expired)"),
                RelayEvent::Refused { member, addr } => {
                    warn!(%member, %addr, "refused a member key (--refuse-member)")
                }
                RelayEvent::OtherVersion { addr, version } => warn!(
                    %addr,
                    "a peer speaks protocol version {version}; this relay speaks version 2 \
                     (upgrade it): its datagrams are dropped"
                ),
                RelayEvent::CookieMode(true) => {
                    warn!("handshake load: initiations now need a cookie (cookie mode on)")
                }
                RelayEvent::CookieMode(false) => info!("cookie mode off"),
            }
        }
        if send_errors > 0 {
            relay.count_drops(DropReason::SendFailed, send_errors);
            send_errors = 0;
        }
    }
    Ok(())
}

/// The relay's status snapshot.
fn snapshot(relay: &Relay, networks: &[NetworkId], listen: &str) -> Status {
    let stats = relay.stats();
    let peers = relay.peers(Instant::now());
    let mut s = Status::new(Role::Relay, &[&stats.drops]);
    s.relay = Some(RelayStatus {
        listen: listen.to_string(),
        networks: networks
            .iter()
            .map(|id| NetworkStatus {
                id: id.to_string(),
                peers: peers.iter().filter(|p| p.network == *id).count() as u64,
            })
            .collect(),
        peers: peers
            .iter()
            .map(|p| PeerStatus {
                network: p.network.to_string(),
                member: p.member.to_string(),
                public_key: status::hex(&p.public),
                address: p.addr.to_string(),
                session_age_seconds: status::secs(p.session_age),
                handshakes: p.handshakes,
                idle_seconds: status::secs(p.idle),
                datagrams_received: p.rx,
            })
            .collect(),
        datagrams_received: stats.rx,
        datagrams_sent: stats.tx,
        registrations: stats.registrations,
        timeouts: stats.timeouts,
        handshakes: stats.handshakes,
        cookies_sent: stats.cookies_sent,
        cookie_mode: stats.cookie_mode,
    });
    s
}
