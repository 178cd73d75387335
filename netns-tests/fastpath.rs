//! The fast path end to end: TCP super-frames from vnet TAPs (and from the
//! bridge's NIC) cross the relay one segment per datagram, as `RoutedFrame`s
//! when every peer advertised the capability, and are put back together
//! into super-frames at the receiver; the network falls back to `Frame`, and
//! back again, as a peer started with `--no-offload` comes and goes. Checked
//! with real TCP transfers (content compared by SHA-256) and each process's
//! `status --json`.

use std::time::{Duration, Instant};

use lanbridge::status::UplinkStatus;

use crate::{
    harness::{wait_until, Lab, Ns},
    lan::{assert_ping, transfer_intact, BridgedLan},
    overlay::{ping_within, Overlay},
    status::status_json,
};

/// Bound of every wait and of every transfer.
const WAIT: Duration = Duration::from_secs(20);
/// Drop reasons that must never count here: they mean mangled, forged or
/// oversized super-frames, or ones sent to a peer that cannot take them.
const BAD_DROPS: [&str; 4] = ["forged", "malformed", "too_big", "no_offload"];

/// The relay uplink of the edge or bridge running in `ns`.
fn uplink(ns: &Ns) -> UplinkStatus {
    let s = status_json(ns, &[]);
    match (s.edge, s.bridge) {
        (Some(e), _) => e.uplink,
        (None, Some(b)) => b
            .uplink
            .unwrap_or_else(|| panic!("bridge in {} has no relay uplink", ns.name())),
        _ => panic!("{} runs neither an edge nor a bridge", ns.name()),
    }
}

/// `reason=count` for each of [`BAD_DROPS`] that counted in `ns`.
fn bad_drops(ns: &Ns) -> Vec<String> {
    let s = status_json(ns, &[]);
    BAD_DROPS
        .iter()
        .filter_map(|r| match s.drops.get(*r) {
            Some(&n) if n > 0 => Some(format!("{}: {r}={n}", ns.short())),
            Some(_) => None,
            None => Some(format!("{}: no counter {r}", ns.short())),
        })
        .collect()
}

/// [`transfer_intact`] within [`WAIT`]: `len` pseudo-random bytes over TCP,
/// SHA-256 compared. Returns how long it took.
#[allow(clippy::too_many_arguments)]
fn transfer(
    lab: &Lab,
    what: &str,
    from: &Ns,
    to: &Ns,
    to_ip: &str,
    port: u16,
    len: usize,
    seed: u64,
) -> Duration {
    transfer_intact(lab, what, from, to, to_ip, port, len, seed, WAIT)
}

/// Polls the uplink in `ns` until `cond` holds (at most `timeout`); panics
/// with `what`, the last uplink seen and the logs otherwise. Returns the
/// time it took and the uplink that satisfied it.
fn wait_uplink(
    lab: &Lab,
    ns: &Ns,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut(&UplinkStatus) -> bool,
) -> (Duration, UplinkStatus) {
    let start = Instant::now();
    let mut last = None;
    let ok = wait_until(timeout, || {
        let u = uplink(ns);
        let hit = cond(&u);
        last = Some(u);
        hit
    });
    assert!(
        ok,
        "{}: {what} not within {timeout:?}; last uplink {last:#?}\n{}",
        ns.short(),
        lab.logs()
    );
    (start.elapsed(), last.unwrap())
}

/// V (an edge) and L1 (behind a bridge) exchange 8 MiB each way through the
/// relay with routed frames negotiated: the bytes arrive intact, the edge
/// reads super-frames for V→L1 and writes rebuilt ones for L1→V, the bridge
/// likewise, and no process drops anything as forged, malformed, too big or
/// not offload-capable.
#[test]
fn super_frames_cross_whole_and_intact() {
    let Some(lab) = Lab::new("fastpath_whole") else {
        return;
    };
    let start = Instant::now();
    let t = BridgedLan::new(&lab);
    let v = t.virtual_host(&lab, "v1", 101);
    let bridge = &t.b.host.ns;
    assert_ping(&lab, &v.ns, &t.l1.ip);
    assert_ping(&lab, &t.l1.ns, &v.ip);
    let (took, _) = wait_uplink(&lab, &v.ns, WAIT, "offload", |u| u.offload);
    eprintln!("edge: offload on {took:.2?} after the pings");
    wait_uplink(&lab, bridge, WAIT, "offload", |u| u.offload);

    // V → L1: the edge's TAP hands over super-frames; they go out whole.
    let (v0, b0) = (uplink(&v.ns), uplink(bridge));
    transfer(
        &lab,
        "V -> L1",
        &v.ns,
        &t.l1.ns,
        &t.l1.ip,
        5001,
        8 << 20,
        0xfa57,
    );
    let (v1, b1) = (uplink(&v.ns), uplink(bridge));
    eprintln!(
        "V -> L1: edge out {} frames ({} whole super-frames); bridge in {} ({} whole)",
        v1.frames_out - v0.frames_out,
        v1.offload_frames_out - v0.offload_frames_out,
        b1.frames_in - b0.frames_in,
        b1.offload_frames_in - b0.offload_frames_in
    );
    assert!(v1.offload, "edge: offload off after V -> L1: {v1:#?}");
    assert!(
        v1.offload_frames_out > v0.offload_frames_out,
        "edge sent no super-frame whole for 8 MiB of TCP: {v0:#?} -> {v1:#?}"
    );
    assert!(
        b1.offload_frames_in > b0.offload_frames_in,
        "bridge received no super-frame whole for 8 MiB of TCP: {b0:#?} -> {b1:#?}"
    );

    // L1 → V: the bridge's packet socket hands over super-frames (veth
    // GRO/TSO); the edge receives them whole.
    transfer(
        &lab,
        "L1 -> V",
        &t.l1.ns,
        &v.ns,
        &v.ip,
        5002,
        8 << 20,
        0x5afe,
    );
    let (v2, b2) = (uplink(&v.ns), uplink(bridge));
    eprintln!(
        "L1 -> V: bridge out {} frames ({} whole super-frames); edge in {} ({} whole)",
        b2.frames_out - b1.frames_out,
        b2.offload_frames_out - b1.offload_frames_out,
        v2.frames_in - v1.frames_in,
        v2.offload_frames_in - v1.offload_frames_in
    );
    assert!(
        v2.offload_frames_in > v1.offload_frames_in,
        "edge received no super-frame whole for 8 MiB of TCP: {v1:#?} -> {v2:#?}"
    );
    assert!(
        b2.offload_frames_out > b1.offload_frames_out,
        "bridge sent no super-frame whole for 8 MiB of TCP: {b1:#?} -> {b2:#?}"
    );

    let bad: Vec<String> = [&v.ns, bridge, &t.net.relay_ns]
        .into_iter()
        .flat_map(bad_drops)
        .collect();
    assert!(bad.is_empty(), "drops: {bad:?}\n{}", lab.logs());
    eprintln!("fastpath_whole: {:.2?} in all", start.elapsed());
}

/// The same over IPv6: V and L1 exchange 4 MiB each way intact; the SYNs
/// MSS is clamped (so every segment fits one datagram) and both ends put
/// the IPv6 segments back together into super-frames.
#[test]
fn ipv6_tcp_crosses_clamped_and_put_back_together() {
    let Some(lab) = Lab::new("fastpath_v6") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v = t.virtual_host(&lab, "v1", 101);
    let bridge = &t.b.host.ns;
    t.l1.ns.add_addr("eth0", "fd00:51::11/64").unwrap();
    v.ns.add_addr("tap0", "fd00:51::101/64").unwrap();
    assert_ping(&lab, &t.l1.ns, "fd00:51::101");
    assert_ping(&lab, &v.ns, "fd00:51::11");
    let (v0, b0) = (uplink(&v.ns), uplink(bridge));
    transfer(
        &lab,
        "V -> L1 (IPv6)",
        &v.ns,
        &t.l1.ns,
        "[fd00:51::11]",
        5011,
        4 << 20,
        0x6a,
    );
    transfer(
        &lab,
        "L1 -> V (IPv6)",
        &t.l1.ns,
        &v.ns,
        "[fd00:51::101]",
        5012,
        4 << 20,
        0x6b,
    );
    let (v1, b1) = (uplink(&v.ns), uplink(bridge));
    assert!(
        v1.mss_clamped > v0.mss_clamped && b1.mss_clamped > b0.mss_clamped,
        "no SYN clamped: edge {v0:#?} -> {v1:#?}, bridge {b0:#?} -> {b1:#?}"
    );
    assert!(
        v1.offload_frames_in > v0.offload_frames_in && b1.offload_frames_in > b0.offload_frames_in,
        "no IPv6 super-frame rebuilt: edge {v0:#?} -> {v1:#?}, bridge {b0:#?} -> {b1:#?}"
    );
    let bad: Vec<String> = [&v.ns, bridge, &t.net.relay_ns]
        .into_iter()
        .flat_map(bad_drops)
        .collect();
    assert!(bad.is_empty(), "drops: {bad:?}\n{}", lab.logs());
}

/// Edges A and B read and write super-frames; C joins with `--no-offload`.
/// Every member opens every other's Data datagrams (protocol version 2 has
/// nothing to negotiate): 2 MiB cross A→B, A→C and C→A intact, A still cuts
/// its super-frames one segment per datagram while C is there, and nobody
/// drops anything as forged, malformed or too big.
#[test]
fn a_peer_without_offload_talks_with_everyone() {
    let Some(lab) = Lab::new("fastpath_fallback") else {
        return;
    };
    let start = Instant::now();
    let net = Overlay::new(&lab);
    let a = net.edge(&lab, "a", 1);
    let b = net.edge(&lab, "b", 2);
    assert!(ping_within(&a.ns, &b.ip, WAIT), "{}", lab.logs());
    wait_uplink(&lab, &a.ns, WAIT, "offload", |u| u.offload);
    let c = net.edge_with(&lab, "c", 3, &net.key, &["--no-offload"]);
    wait_uplink(&lab, &c.ns, WAIT, "registered", |u| u.registered);
    let c_up = uplink(&c.ns);
    assert!(!c_up.offload, "C (--no-offload) coalesces: {c_up:#?}");
    assert!(ping_within(&a.ns, &c.ip, WAIT), "{}", lab.logs());
    let a0 = uplink(&a.ns);
    transfer(&lab, "A -> B", &a.ns, &b.ns, &b.ip, 5002, 2 << 20, 2);
    transfer(&lab, "A -> C", &a.ns, &c.ns, &c.ip, 5003, 2 << 20, 3);
    transfer(&lab, "C -> A", &c.ns, &a.ns, &a.ip, 5004, 2 << 20, 4);
    let a1 = uplink(&a.ns);
    assert!(
        a1.offload_frames_out > a0.offload_frames_out,
        "A read no super-frame: {a0:#?} -> {a1:#?}"
    );
    let all = [&a.ns, &b.ns, &c.ns, &net.relay_ns];
    let bad: Vec<String> = all.iter().flat_map(|ns| bad_drops(ns)).collect();
    assert!(bad.is_empty(), "drops: {bad:?}\n{}", lab.logs());
    eprintln!("fallback scenario took {:.1?}", start.elapsed());
}
