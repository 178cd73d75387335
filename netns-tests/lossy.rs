//! TCP through the overlay over a lossy underlay: the internet switch drops
//! 1 % of the UDP datagrams on each hop (UDP GSO cut at every sender, so
//! single datagrams are lost, as on a real path; see
//! [`Overlay::lose_udp`]). A few MiB cross intact virtual → LAN and LAN →
//! virtual (edge, relay, bridge) and edge → edge both ways (content compared
//! by SHA-256), within a bound, and the switch's counter shows that each
//! transfer really lost datagrams.
//!
//! The bound is loose on purpose: this checks that losses are recovered,
//! not how fast (that is `scripts/bench.sh --loss`).

use std::time::{Duration, Instant};

use crate::{
    harness::{Lab, Ns},
    lan::{assert_ping, transfer_intact, BridgedLan},
    overlay::Overlay,
};

/// Share of UDP datagrams the underlay drops on each hop, per mille.
const LOSS_PER_MILLE: u16 = 10;
/// Bytes per transfer.
const LEN: usize = 3 << 20;
/// Bound of each transfer.
const WAIT: Duration = Duration::from_secs(40);

/// One transfer through the lossy underlay of `net`: intact, and with at
/// least one datagram dropped on the way.
#[allow(clippy::too_many_arguments)]
fn lossy_transfer(
    lab: &Lab,
    net: &Overlay,
    what: &str,
    from: &Ns,
    to: &Ns,
    to_ip: &str,
    port: u16,
    seed: u64,
) {
    let before = net.udp_loss();
    transfer_intact(lab, what, from, to, to_ip, port, LEN, seed, WAIT);
    let loss = net.udp_loss().since(before);
    eprintln!(
        "{what}: the underlay dropped {} of {} UDP datagrams ({:.2} %)",
        loss.dropped,
        loss.seen,
        loss.percent()
    );
    assert!(
        loss.dropped > 0,
        "{what}: the underlay dropped no datagram ({loss:?}): the loss rule does not work"
    );
}

/// V (an edge) and L1 (a LAN host behind a bridge) exchange 3 MiB each way
/// through the relay while the underlay loses 1 % of the datagrams per hop.
#[test]
fn tcp_between_virtual_and_lan_hosts_survives_underlay_loss() {
    let Some(lab) = Lab::new("lossy_bridge") else {
        return;
    };
    let start = Instant::now();
    let t = BridgedLan::new(&lab);
    let v = t.virtual_host(&lab, "v1", 101);
    t.net.lose_udp(LOSS_PER_MILLE);
    assert_ping(&lab, &v.ns, &t.l1.ip);
    assert_ping(&lab, &t.l1.ns, &v.ip);
    let net = &t.net;
    lossy_transfer(&lab, net, "V -> L1", &v.ns, &t.l1.ns, &t.l1.ip, 5001, 1);
    lossy_transfer(&lab, net, "L1 -> V", &t.l1.ns, &v.ns, &v.ip, 5002, 2);
    eprintln!("lossy_bridge: {:.2?} in all", start.elapsed());
}

/// Edges A and B exchange 3 MiB each way through the relay while the
/// underlay loses 1 % of the datagrams per hop.
#[test]
fn tcp_between_edges_survives_underlay_loss() {
    let Some(lab) = Lab::new("lossy_edges") else {
        return;
    };
    let start = Instant::now();
    let net = Overlay::new(&lab);
    let a = net.edge(&lab, "a", 1);
    let b = net.edge(&lab, "b", 2);
    net.lose_udp(LOSS_PER_MILLE);
    assert_ping(&lab, &a.ns, &b.ip);
    lossy_transfer(&lab, &net, "A -> B", &a.ns, &b.ns, &b.ip, 5001, 3);
    lossy_transfer(&lab, &net, "B -> A", &b.ns, &a.ns, &a.ip, 5002, 4);
    eprintln!("lossy_edges: {:.2?} in all", start.elapsed());
}
