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
    overlay::{ping_within, start_relay_with, Overlay},
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

/// The count of `reason` drops in `ns`.
fn drops_of(ns: &Ns, reason: &str) -> u64 {
    status_json(ns, &[]).drops.get(reason).copied().unwrap_or(0)
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

/// Relay with keepalive 1 s and peer timeout 3 s; edges A and B negotiate
/// offload; C joins with `--no-offload` and A's uplink turns offload off;
/// 2 MiB cross A→B, A→C and C→A intact, with no `no_offload` drop once the
/// switch was seen (A still segments its super-frames, as Frame); C stops,
/// and A turns routed frames on again within peer timeout plus a few
/// keepalives.
#[test]
fn a_peer_without_offload_turns_it_off_and_everyone_still_talks() {
    let Some(lab) = Lab::new("fastpath_fallback") else {
        return;
    };
    let start = Instant::now();
    let net = Overlay::new(&lab);
    // The same relay again, with short timers.
    net.relay.stop(Duration::from_secs(5));
    let (keepalive, peer_timeout) = (1, 3);
    let ka = keepalive.to_string();
    let pt = peer_timeout.to_string();
    let relay = start_relay_with(
        &net.relay_ns,
        &net.key,
        &["--keepalive", &ka, "--peer-timeout", &pt],
    );
    let a = net.edge(&lab, "a", 1);
    let b = net.edge(&lab, "b", 2);
    assert!(ping_within(&a.ns, &b.ip, WAIT), "{}", lab.logs());
    wait_uplink(&lab, &a.ns, WAIT, "offload", |u| u.offload);
    wait_uplink(&lab, &b.ns, WAIT, "offload", |u| u.offload);
    // Baseline: with only capable peers, A → B goes whole.
    let a0 = uplink(&a.ns);
    transfer(&lab, "A -> B (A, B)", &a.ns, &b.ns, &b.ip, 5001, 2 << 20, 1);
    let a1 = uplink(&a.ns);
    assert!(
        a1.offload_frames_out > a0.offload_frames_out,
        "A sent no super-frame whole with only capable peers: {a0:#?} -> {a1:#?}"
    );

    // C joins without offload: A and B fall back.
    let c = net.edge_with(&lab, "c", 3, &net.key, &["--no-offload"]);
    let (took, _) = wait_uplink(&lab, &c.ns, WAIT, "registered", |u| u.registered);
    eprintln!("C registered {took:.2?} after start");
    let (took, _) = wait_uplink(
        &lab,
        &a.ns,
        Duration::from_secs(3 * keepalive + 2),
        "offload off after C joined",
        |u| !u.offload,
    );
    eprintln!("A: offload off {took:.2?} after C registered");
    wait_uplink(&lab, &b.ns, Duration::from_secs(5), "offload off", |u| {
        !u.offload
    });
    let c_up = uplink(&c.ns);
    assert!(
        !c_up.offload,
        "C (--no-offload) negotiated offload: {c_up:#?}"
    );
    let all = [&a.ns, &b.ns, &c.ns, &net.relay_ns];
    let no_offload_at_switch: Vec<u64> = all.iter().map(|ns| drops_of(ns, "no_offload")).collect();
    eprintln!("no_offload drops (A, B, C, relay) at the switch-over: {no_offload_at_switch:?}");

    assert!(ping_within(&a.ns, &c.ip, WAIT), "{}", lab.logs());
    let a2 = uplink(&a.ns);
    transfer(
        &lab,
        "A -> B (C there)",
        &a.ns,
        &b.ns,
        &b.ip,
        5002,
        2 << 20,
        2,
    );
    transfer(&lab, "A -> C", &a.ns, &c.ns, &c.ip, 5003, 2 << 20, 3);
    transfer(&lab, "C -> A", &c.ns, &a.ns, &a.ip, 5004, 2 << 20, 4);
    let a3 = uplink(&a.ns);
    assert!(!a3.offload, "A: offload on while C is there: {a3:#?}");
    // A still reads super-frames from its TAP and sends them one segment
    // per datagram, as Frame now (C can't take RoutedFrame).
    assert!(
        a3.offload_frames_out > a2.offload_frames_out,
        "A read no super-frame while C was there: {a2:#?} -> {a3:#?}"
    );
    assert!(
        a3.frames_out > a2.frames_out,
        "A sent nothing: {a2:#?} -> {a3:#?}"
    );
    let no_offload_after: Vec<u64> = all.iter().map(|ns| drops_of(ns, "no_offload")).collect();
    assert_eq!(
        no_offload_after,
        no_offload_at_switch,
        "no_offload drops (A, B, C, relay) during the transfers, after the switch-over\n{}",
        lab.logs()
    );
    let bad: Vec<String> = all
        .iter()
        .flat_map(|ns| bad_drops(ns))
        .filter(|d| !d.contains("no_offload"))
        .collect();
    assert!(bad.is_empty(), "drops: {bad:?}\n{}", lab.logs());

    // C leaves: once the relay forgets it, A and B go back to offload.
    let stopped = Instant::now();
    let status = c.proc.stop(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "C did not stop cleanly: {status:?}\n{}",
        c.proc.log()
    );
    let bound = Duration::from_secs(peer_timeout + 4 * keepalive + 1);
    wait_uplink(&lab, &a.ns, bound, "offload back on after C left", |u| {
        u.offload
    });
    eprintln!(
        "A: offload on again {:.2?} after C stopped",
        stopped.elapsed()
    );
    wait_uplink(&lab, &b.ns, Duration::from_secs(5), "offload on", |u| {
        u.offload
    });
    let (a4, b4) = (uplink(&a.ns), uplink(&b.ns));
    transfer(
        &lab,
        "A -> B (C gone)",
        &a.ns,
        &b.ns,
        &b.ip,
        5005,
        2 << 20,
        5,
    );
    let (a5, b5) = (uplink(&a.ns), uplink(&b.ns));
    assert!(
        a5.offload_frames_out > a4.offload_frames_out,
        "A sent no super-frame whole after C left: {a4:#?} -> {a5:#?}"
    );
    assert!(
        b5.offload_frames_in > b4.offload_frames_in,
        "B received no super-frame whole after C left: {b4:#?} -> {b5:#?}"
    );
    let bad: Vec<String> = [&a.ns, &b.ns, &net.relay_ns]
        .into_iter()
        .flat_map(bad_drops)
        .filter(|d| !d.contains("no_offload"))
        .collect();
    assert!(bad.is_empty(), "drops: {bad:?}\n{}", lab.logs());
    let no_offload_end: Vec<u64> = [&a.ns, &b.ns, &net.relay_ns]
        .iter()
        .map(|ns| drops_of(ns, "no_offload"))
        .collect();
    let before = [
        no_offload_after[0],
        no_offload_after[1],
        no_offload_after[3],
    ];
    assert_eq!(
        no_offload_end,
        before,
        "no_offload drops (A, B, relay) after C left\n{}",
        lab.logs()
    );
    assert!(relay.is_running(), "relay died:\n{}", relay.log());
    eprintln!("fastpath_fallback: {:.2?} in all", start.elapsed());
}
