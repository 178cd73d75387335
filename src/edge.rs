//! The edge driver: a TAP device on one side, the relay on the other.

use std::{io, time::Instant};

use anyhow::Context;
use tracing::info;

use crate::{
    cli::{read_member_key, EdgeArgs},
    control::Ops,
    core::{drop::DropReason, mac::MacAddr, offload::VnetHdr},
    identity::load_identity,
    io::{netlink::Netlink, tap::Tap, udp::burst_step},
    signals::Shutdown,
    status::{EdgeStatus, Role, Status},
    uplink::Uplink,
};

/// Runs an edge until SIGINT/SIGTERM; the TAP disappears on return.
pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::new()?;
    let key = read_member_key(&args.key_file)?;
    let identity = load_identity(args.identity_file.as_deref())?;
    let connect = Uplink::connect(&key, identity, &args.relay, &args.tuning);
    let Some(mut uplink) = shutdown.unless_stopped(connect).await? else {
        return Ok(());
    };

    let tap = Tap::open(&args.tap, !args.tuning.no_offload)?;
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
    uplink.set_overlay_ifaces(vec![tap.name().to_string()]);
    let (mac, _) = netlink.mac_and_mtu(tap.name()).await?;
    let ops = Ops::start(Role::Edge, &args.ops).await?;
    info!(tap = tap.name(), %mac, address = ?args.address.map(|c| c.to_string()), relay = %uplink.relay(), member = %uplink.client().identity().id(), "edge running");

    let mut tap_buf = vec![0u8; 65536 + 64];
    let mut udp_buf = vec![0u8; 65536];
    let mut seg_buf = Vec::with_capacity(2048);
    let mtu = args.mtu as usize;
    let mut next_poll = Instant::now();
    loop {
        let sleep = tokio::time::sleep_until(next_poll.into());
        tokio::select! {
            sig = shutdown.recv() => {
                info!("{sig}: edge stopping, removing {}", tap.name());
                break;
            }
            r = tap.recv(&mut tap_buf) => {
                let (hdr, n) = match r {
                    Ok(v) => v,
                    // A vnet header the kernel should never write.
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        uplink.count_drops(DropReason::Malformed, 1);
                        continue;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot read from TAP {}", tap.name()));
                    }
                };
                // HOT PATH
                uplink.send_frame(&hdr, &mut tap_buf[..n], mtu);
            }
            r = uplink.recv(&mut udp_buf) => {
                let Some(received) = burst_step(r) else {
                    continue;
                };
                // HOT PATH: what is queued now is one batch (GRO bursts, or
                // single datagrams), so that the segments in it are put back
                // together before the TAP.
                let (mut drops, mut gone) = (Vec::new(), false);
                let mut deliver = |hdr: &VnetHdr, frame: &[u8]| {
                    match tap.deliver(hdr, frame, mtu, &mut seg_buf) {
                        Ok(Some(drop)) => drops.push(drop),
                        Ok(None) => {}
                        Err(_) => gone = true,
                    }
                };
                uplink.handle_burst(Instant::now(), received, &mut udp_buf, &mut deliver);
                for (reason, n) in drops {
                    uplink.count_drops(reason, n);
                }
                if gone {
                    return Err(tap.gone_error().into());
                }
            }
            _ = sleep => {
                next_poll = uplink.poll(Instant::now()).await;
            }
            conn = ops.accept() => {
                ops.serve(conn, || snapshot(&uplink, tap.name(), mac));
            }
        }
        uplink.after_event();
    }
    Ok(())
}

/// The edge's status snapshot.
fn snapshot(uplink: &Uplink, tap: &str, mac: MacAddr) -> Status {
    let client = uplink.client();
    let mut s = Status::new(Role::Edge, &[&client.stats().drops]);
    s.edge = Some(EdgeStatus {
        tap: tap.to_string(),
        mac: mac.to_string(),
        uplink: uplink.status(),
    });
    s
}
