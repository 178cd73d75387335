//! Host access (issue 12 item 4): the bridge host reaches the virtual hosts
//! with its own LAN addresses and they reach it, ping and TCP both ways,
//! IPv4 and IPv6, through the host-access TAP; the LAN meanwhile sees no
//! MAC but the bridge NIC's (and the LAN hosts' own), and the bridge host's
//! own LAN traffic still works. The TAP goes away with the bridge, also
//! after SIGKILL, and a stale one is replaced at start.

use std::time::Duration;

use lanbridge::core::mac::MacAddr;
use nix::sys::signal::Signal;

use crate::{
    harness::{lanbridge_bin, wait_until, Frame, Lab, Switch},
    lan::{assert_ping, lan_host, lan_ip, start_bridge, transfer_intact, BridgedLan},
    overlay::{Overlay, RELAY_IP, RELAY_PORT},
};

/// 2 MB each way, as the issue asks.
const BULK: usize = 2 << 20;
const BULK_TIMEOUT: Duration = Duration::from_secs(60);

/// The MACs in a captured frame that are not `allowed`: Ethernet source,
/// unicast destination, ARP sender and target hardware addresses, and any
/// of `forbidden` found anywhere in the bytes (NDP options included).
fn foreign_macs(f: &Frame, allowed: &[MacAddr], forbidden: &[MacAddr]) -> Vec<MacAddr> {
    let mut bad = Vec::new();
    let ok = |m: MacAddr| allowed.contains(&m);
    if let Some(src) = f.src().filter(|&m| !ok(m)) {
        bad.push(src);
    }
    if let Some(dst) = f.dst().filter(|&m| m.is_unicast() && !ok(m)) {
        bad.push(dst);
    }
    if let Some(arp) = f.arp() {
        for m in [arp.sha, arp.tha] {
            if m != MacAddr::ZERO && m.is_unicast() && !ok(m) {
                bad.push(m);
            }
        }
    }
    bad.extend(forbidden.iter().filter(|&&m| f.contains_mac_bytes(m)));
    bad
}

#[test]
fn the_bridge_host_and_virtual_hosts_reach_each_other_and_the_lan_sees_only_n() {
    let Some(lab) = Lab::new("hostaccess") else {
        return;
    };
    let cap_lan = lab.switch("lan");
    // The capture starts before anything else runs on the LAN.
    let cap = cap_lan.ns().capture(Switch::BRIDGE).unwrap();
    let t = BridgedLan::with_switch(&lab, cap_lan);
    let b = &t.b.host;
    let n = b.mac;
    let tap = b.ns.link_mac("lbh-eth0");
    assert!(tap.is_some(), "no host-access TAP:\n{}", lab.logs());
    let tap = tap.unwrap();
    assert_ne!(tap, n);
    let v1 = t.virtual_host(&lab, "v1", 101);
    let v1_mac = v1.ns.link_mac("tap0").unwrap();
    b.ns.add_addr("eth0", "fd00:50::2/64").unwrap();
    t.l1.ns.add_addr("eth0", "fd00:50::11/64").unwrap();
    v1.ns.add_addr("tap0", "fd00:50::101/64").unwrap();

    // IPv4, both ways; then IPv6.
    assert_ping(&lab, &b.ns, &v1.ip);
    assert_ping(&lab, &v1.ns, &b.ip);
    assert_ping(&lab, &b.ns, "fd00:50::101");
    assert_ping(&lab, &v1.ns, "fd00:50::2");
    // Through the host TAP, from the NIC's addresses.
    for (dst, src) in [
        (v1.ip.as_str(), b.ip.as_str()),
        ("fd00:50::101", "fd00:50::2"),
    ] {
        let route = b.ns.ip(&["route", "get", dst]);
        assert!(
            route.contains("dev lbh-eth0") && route.contains(&format!("src {src}")),
            "B's route to {dst}: {route}"
        );
    }
    // The status names the TAP and counts the routes and frames.
    let out = b.ns.run(lanbridge_bin(), &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bridge = &status["bridge"];
    assert_eq!(bridge["host_tap"], "lbh-eth0", "{status}");
    assert!(bridge["nat"]["host_routes"].as_u64() >= Some(2), "{status}");
    assert!(
        bridge["nat"]["overlay_to_host"].as_u64() > Some(0),
        "{status}"
    );
    assert!(
        bridge["nat"]["host_to_overlay"].as_u64() > Some(0),
        "{status}"
    );
    // V1 knows the bridge host by the NIC's MAC, as the LAN does.
    let entry = v1.ns.neigh(&b.ip).expect("V1 has no entry for B");
    assert_eq!(entry.mac, Some(n), "{entry:?}");

    // 2 MB of TCP, byte for byte, each way and each family.
    let v1_6 = "[fd00:50::101]";
    let b_6 = "[fd00:50::2]";
    transfer_intact(
        &lab,
        "B -> V1 (IPv4)",
        &b.ns,
        &v1.ns,
        &v1.ip,
        5301,
        BULK,
        1,
        BULK_TIMEOUT,
    );
    transfer_intact(
        &lab,
        "V1 -> B (IPv4)",
        &v1.ns,
        &b.ns,
        &b.ip,
        5302,
        BULK,
        2,
        BULK_TIMEOUT,
    );
    transfer_intact(
        &lab,
        "B -> V1 (IPv6)",
        &b.ns,
        &v1.ns,
        v1_6,
        5303,
        BULK,
        3,
        BULK_TIMEOUT,
    );
    transfer_intact(
        &lab,
        "V1 -> B (IPv6)",
        &v1.ns,
        &b.ns,
        b_6,
        5304,
        BULK,
        4,
        BULK_TIMEOUT,
    );

    // A virtual host that speaks first: it resolves the host (the bridge
    // answers for it) and its route appears once its address is granted.
    let v2 = t.virtual_host(&lab, "v2", 102);
    v2.ns.add_addr("tap0", "fd00:50::102/64").unwrap();
    assert_ping(&lab, &v2.ns, &b.ip);
    assert_ping(&lab, &v2.ns, "fd00:50::2");
    assert_ping(&lab, &b.ns, &v2.ip);
    assert_ping(&lab, &b.ns, "fd00:50::102");
    let v2_mac = v2.ns.link_mac("tap0").unwrap();

    // The bridge host's own LAN traffic still works, and the LAN still
    // reaches the virtual host.
    assert_ping(&lab, &b.ns, &t.l1.ip);
    assert_ping(&lab, &b.ns, "fd00:50::11");
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    assert_ping(&lab, &t.l1.ns, "fd00:50::101");

    let frames = cap.stop().unwrap();
    assert!(
        frames.iter().any(|f| f.ethertype() == Some(0x86dd)),
        "the capture saw no IPv6"
    );
    let allowed = [n, t.l1.mac, t.l2.mac];
    let bad: Vec<_> = frames
        .iter()
        .map(|f| (f, foreign_macs(f, &allowed, &[tap, v1_mac, v2_mac])))
        .filter(|(_, m)| !m.is_empty())
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} LAN frames show a MAC other than N {n} and the LAN hosts' \
         (T is {tap}, V1 is {v1_mac}): e.g. {:?} in {:02x?}",
        bad.len(),
        frames.len(),
        bad[0].1,
        bad[0].0.data
    );
    // Nothing of the host's TCP with V1 crossed the LAN.
    let big = frames.iter().filter(|f| f.orig_len > 1000).count();
    assert!(
        big < 100,
        "{big} large frames on the LAN: the host's traffic went the wrong way"
    );
}

#[test]
fn the_host_tap_replaces_a_stale_one_and_vanishes_after_sigkill() {
    let Some(lab) = Lab::new("hostaccess_kill") else {
        return;
    };
    let net = Overlay::new(&lab);
    let lan = lab.switch("lan");
    let l1 = lan_host(&lab, &lan, "l1", &lan_ip(11));
    let b = lan_host(&lab, &lan, "b", &lan_ip(2));
    net.plug(&lab, &b.ns, "wan0");
    // A persistent TAP of the default name, as a run killed oddly (or an
    // operator) could leave one.
    b.ns.ip(&["tuntap", "add", "dev", "lbh-eth0", "mode", "tap"]);
    assert!(b.ns.link_mac("lbh-eth0").is_some());
    let relay = format!("{RELAY_IP}:{RELAY_PORT}");
    let key = net.key.to_str().unwrap();
    // The bridge keeps its identity across the restart below, as its
    // systemd unit does, so the members take its MACs from it at once.
    let identity = lab.dir().join("b.identity");
    let identity = identity.to_str().unwrap();
    let args = [
        "--relay",
        &relay,
        "--key-file",
        key,
        "--identity-file",
        identity,
    ];
    let proc = start_bridge(&b.ns, &args);
    assert!(
        proc.log().contains("removed a stale host-access device"),
        "no word about the stale TAP:\n{}",
        proc.log()
    );
    let v1 = crate::lan::virtual_host(&lab, &net, "v1", &lan_ip(101));
    assert_ping(&lab, &b.ns, &v1.ip);
    let routes = b.ns.ip(&["route", "show", "dev", "lbh-eth0"]);
    assert!(routes.contains(&v1.ip), "no host route to V1: {routes}");

    proc.signal(Signal::SIGKILL).unwrap();
    proc.wait_timeout(Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(5), || b
            .ns
            .link_mac("lbh-eth0")
            .is_none()),
        "the host TAP outlived SIGKILL"
    );
    let routes = b.ns.ip(&["route", "show"]);
    assert!(
        !routes.contains(&v1.ip),
        "a route to V1 outlived SIGKILL: {routes}"
    );
    // The host's own LAN traffic is as before.
    assert_ping(&lab, &b.ns, &l1.ip);
    // A fresh bridge starts cleanly, with no stale device to remove.
    let proc = start_bridge(&b.ns, &args);
    assert!(!proc.log().contains("removed a stale"), "{}", proc.log());
    assert_ping(&lab, &b.ns, &v1.ip);
}

#[test]
fn no_host_access_leaves_the_host_alone() {
    let Some(lab) = Lab::new("hostaccess_off") else {
        return;
    };
    let net = Overlay::new(&lab);
    let lan = lab.switch("lan");
    let b = lan_host(&lab, &lan, "b", &lan_ip(2));
    net.plug(&lab, &b.ns, "wan0");
    let relay = format!("{RELAY_IP}:{RELAY_PORT}");
    let key = net.key.to_str().unwrap();
    let _proc = start_bridge(
        &b.ns,
        &["--relay", &relay, "--key-file", key, "--no-host-access"],
    );
    assert!(b.ns.link_mac("lbh-eth0").is_none());
    let links = b.ns.ip(&["-o", "link", "show"]);
    assert!(!links.contains("lbh-"), "{links}");
}
