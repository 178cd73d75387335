//! The edge driver: a TAP device on one side, the relay on the other, and
//! the [`Client`] state machine between them.

use std::{net::SocketAddr, time::Instant};

use anyhow::Context;
use tokio::net::UdpSocket;
use tracing::{debug, info, trace, warn};

use crate::{
    cli::{read_key_file, EdgeArgs},
    core::{
        client::{Client, ClientConfig, ClientEvent},
        drop::DropReason,
        wire::{Cipher, SessionId},
    },
    io::{netlink::Netlink, plain, tap::Tap},
    report::DropReport,
    signals::Shutdown,
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

/// A UDP socket connected in spirit to the relay: bound to the wildcard
/// address of the relay's family.
pub async fn relay_socket(relay: SocketAddr) -> anyhow::Result<UdpSocket> {
    let local: SocketAddr = if relay.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    UdpSocket::bind(local)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open UDP socket: {}", plain(&e)))
}

/// Runs an edge until SIGINT/SIGTERM; the TAP disappears on return.
pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    let key = read_key_file(&args.key_file)?;
    let relay = resolve_relay(&args.relay).await?;
    let mut shutdown = Shutdown::new()?;

    let tap = Tap::open(&args.tap)?;
    let netlink = Netlink::connect()?;
    let index = netlink.index(tap.name()).await?;
    netlink
        .configure(index, tap.name(), args.mac, Some(args.mtu))
        .await?;
    if let Some(cidr) = args.address {
        netlink
            .add_address(index, tap.name(), cidr.addr, cidr.prefix)
            .await?;
    }
    let (mac, _) = netlink.mac_and_mtu(tap.name()).await?;
    let socket = relay_socket(relay).await?;
    let config = ClientConfig {
        max_datagram: usize::from(args.tuning.max_datagram),
        ..ClientConfig::default()
    };
    let mut client = Client::new(config, Cipher::new(&key), SessionId::random(), relay);
    info!(tap = tap.name(), %mac, address = ?args.address.map(|c| c.to_string()), %relay, "edge running");

    let mut tap_buf = vec![0u8; 65536 + 64];
    let mut udp_buf = vec![0u8; 65536];
    let mut next_poll = Instant::now();
    let mut failed_sends = 0u64;
    let mut was_registered = false;
    let mut drops = DropReport::new("datagrams", Instant::now());
    loop {
        let sleep = tokio::time::sleep_until(next_poll.into());
        tokio::select! {
            sig = shutdown.recv() => {
                info!("{sig}: edge stopping, removing {}", tap.name());
                break;
            }
            r = tap.recv(&mut tap_buf) => {
                let n = r.with_context(|| format!("cannot read from TAP {}", tap.name()))?;
                // HOT PATH
                let _ = client.handle_frame(&tap_buf[..n], &mut |d| {
                    if socket.try_send_to(d, relay).is_err() {
                        failed_sends += 1;
                    }
                });
            }
            r = socket.recv_from(&mut udp_buf) => {
                let (n, from) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        debug!("recv: {}", plain(&e));
                        continue;
                    }
                };
                // HOT PATH
                let event = client.handle_datagram(Instant::now(), from, &udp_buf[..n], &mut |d| {
                    if socket.try_send_to(d, relay).is_err() {
                        failed_sends += 1;
                    }
                });
                match event {
                    ClientEvent::Frame(frame) => {
                        if tap.try_send(frame).is_err() {
                            failed_sends += 1;
                        }
                    }
                    ClientEvent::Registered => {}
                    ClientEvent::Nothing => {}
                    ClientEvent::Drop(reason) => trace!(%from, %reason, "dropped datagram"),
                }
            }
            _ = sleep => {
                let now = Instant::now();
                next_poll = client.poll(now, &mut |d| {
                    if socket.try_send_to(d, relay).is_err() {
                        failed_sends += 1;
                    }
                });
                drops.maybe_log(now, &client.stats().drops);
            }
        }
        if client.is_registered() != was_registered {
            was_registered = client.is_registered();
            if was_registered {
                info!(%relay, "registered with relay");
            } else {
                warn!(%relay, "lost the relay, registering again");
            }
        }
        for _ in 0..std::mem::take(&mut failed_sends) {
            client.count_drop(DropReason::SendFailed);
        }
    }
    Ok(())
}
