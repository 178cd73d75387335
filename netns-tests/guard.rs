//! First-hop security scenarios: a virtual host (an edge's TAP) or a LAN
//! host attacks the bridged LAN the way issue 12 found it could, with real
//! clients and crafted frames, and the bridge holds:
//! - a rogue router advertisement from a virtual host gives no LAN host an
//!   address or a route (RA guard);
//! - a rogue DHCP server on a virtual host leases nothing to a LAN host
//!   (DHCP snooping);
//! - a spoofed neighbour advertisement for a LAN host's address leaves the
//!   other LAN hosts' neighbour entries alone (ND inspection);
//! - a LAN host sending with a virtual host's MAC takes nothing over (the
//!   mirror guard);
//! - a virtual host configured with a silent LAN host's address gets it
//!   refused after the bridge's ARP probe is answered (probing).
//!
//! Crafted frames are built and sent with scapy (Debian's python3-scapy,
//! run by /usr/bin/python3): an implementation independent of lanbridge's
//! own frame code, so a bug there can't hide in the test's frames too, and
//! the tool the reports were made with. Waits end on an event (a
//! drop counter, an address, a capture) within a bound.

use std::time::Duration;

use lanbridge::core::mac::MacAddr;

use crate::{
    harness::{lanbridge_bin, wait_until, Frame, Lab, Ns, Switch},
    lan::{assert_ping, dhcp_client_with, dhcp_server, lan_host, lan_ip, BridgedLan},
    overlay::ping_count,
};

/// The Python that has scapy (Debian's; a pyenv `python3` may not).
const PYTHON: &str = "/usr/bin/python3";

/// How long a counter or an address may take to show up.
const EVENT: Duration = Duration::from_secs(10);

/// Runs a scapy script in `ns` (after `from scapy.all import *`); panics
/// with its output if it fails.
fn scapy(ns: &Ns, script: &str) {
    let code = format!("from scapy.all import *\nconf.verb = 0\n{script}\n");
    let out = ns
        .try_run(PYTHON, &["-c", &code], Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{PYTHON} in {}: {e:#}", ns.short()));
    assert!(
        out.status.success(),
        "scapy in {} failed (is python3-scapy installed?):\n{}\n{script}",
        ns.short(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bridge's status snapshot, as JSON.
fn bridge_status(ns: &Ns) -> serde_json::Value {
    let out = ns.run(lanbridge_bin(), &["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        // Said, so that a failing wait tells a status that failed from a
        // counter that stayed put.
        eprintln!(
            "status --json in {}: {e} ({}): {}",
            ns.short(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::Value::Null
    })
}

/// The bridge's drop counter for `reason`.
fn drops(ns: &Ns, reason: &str) -> u64 {
    bridge_status(ns)["drops"][reason].as_u64().unwrap_or(0)
}

/// Waits until the bridge in `ns` has dropped at least `n` frames for
/// `reason`; panics with the lab's logs otherwise.
fn wait_for_drops(lab: &Lab, ns: &Ns, reason: &str, n: u64) {
    assert!(
        wait_until(EVENT, || drops(ns, reason) >= n),
        "the bridge did not count {n} '{reason}' drops (has {}); its status: {}\n{}",
        drops(ns, reason),
        bridge_status(ns),
        lab.logs()
    );
}

/// The EUI-64 link-local address of `mac` (as the kernel makes it).
fn link_local(mac: MacAddr) -> String {
    let m = mac.0;
    format!(
        "fe80::{:02x}{:02x}:{:02x}ff:fe{:02x}:{:02x}{:02x}",
        m[0] ^ 0x02,
        m[1],
        m[2],
        m[3],
        m[4],
        m[5]
    )
}

/// Whether `ns` has an address in `2001:db8:bad::/64` or a route from the
/// rogue RA; returns what it found, for the message.
fn rogue_config(ns: &Ns) -> Option<String> {
    let addrs = ns.ip(&["-6", "addr", "show", "dev", "eth0"]);
    let routes = ns.ip(&["-6", "route", "show"]);
    let bad = addrs.contains("2001:db8:bad:")
        || routes.contains("2001:db8:bad:")
        || routes.contains("default");
    bad.then(|| format!("{addrs}\n{routes}"))
}

/// True for an ICMPv6 message of `kind` (no extension headers).
fn is_icmpv6(f: &Frame, kind: u8) -> bool {
    let p = f.payload();
    f.ethertype() == Some(0x86dd) && p.len() > 40 && p[6] == 58 && p[40] == kind
}

#[test]
fn a_rogue_router_advertisement_from_a_virtual_host_configures_no_lan_host() {
    let Some(lab) = Lab::new("guard_ra") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    for h in [&t.l1, &t.l2] {
        for (key, value) in [("accept_ra", "1"), ("autoconf", "1")] {
            h.ns.sysctl(&format!("net.ipv6.conf.eth0.{key}"), value)
                .unwrap();
        }
    }
    assert_ping(&lab, &v1.ns, &t.l1.ip);
    let cap = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    let v1_mac = v1.ns.link_mac("tap0").unwrap();
    let ra = |mac: MacAddr| {
        format!(
            "ra = (Ether(src='{mac}', dst='33:33:00:00:00:01')\n\
             / IPv6(src='{}', dst='ff02::1', hlim=255)\n\
             / ICMPv6ND_RA(routerlifetime=1800)\n\
             / ICMPv6NDOptSrcLLAddr(lladdr='{mac}')\n\
             / ICMPv6NDOptPrefixInfo(prefix='2001:db8:bad::', prefixlen=64, L=1, A=1,\n\
             validlifetime=7200, preferredlifetime=3600))",
            link_local(mac)
        )
    };
    // Three at a time until the bridge has dropped three, or a LAN host
    // took one (an attacker keeps sending).
    let rogue = format!(
        "{}\nsendp(ra, iface='tap0', count=3, inter=0.2)",
        ra(v1_mac)
    );
    wait_until(EVENT, || {
        scapy(&v1.ns, &rogue);
        drops(&t.b.host.ns, "ra_guard") >= 3 || rogue_config(&t.l1.ns).is_some()
    });
    for h in [&t.l1, &t.l2] {
        if let Some(found) = rogue_config(&h.ns) {
            panic!("{} took the rogue RA:\n{found}", h.ns.short());
        }
    }
    wait_for_drops(&lab, &t.b.host.ns, "ra_guard", 3);
    let frames = cap.stop().unwrap();
    let leaked = frames.iter().filter(|f| is_icmpv6(f, 134)).count();
    assert_eq!(leaked, 0, "router advertisements reached the LAN");

    // The same RA sent on the LAN itself is taken: the check above could
    // have failed.
    scapy(
        &t.l2.ns,
        &format!(
            "{}\nsendp(ra, iface='eth0', count=3, inter=0.2)",
            ra(t.l2.mac)
        ),
    );
    assert!(
        wait_until(EVENT, || rogue_config(&t.l1.ns).is_some()),
        "L1 ignores router advertisements even from its own LAN: the test proves nothing"
    );
}

#[test]
fn a_rogue_dhcp_server_on_a_virtual_host_leases_nothing_to_the_lan() {
    let Some(lab) = Lab::new("guard_dhcp") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    assert_ping(&lab, &v1.ns, &t.l1.ip);
    let rogue = dhcp_server(&lab, &v1.ns, "tap0");
    let c = lab.ns("c");
    lab.plug(&c, "eth0", &t.lan, None).unwrap();
    // One udhcpc run asking for broadcast replies (-B), three discovers.
    let lease = dhcp_client_with(&lab, &c, "eth0", Duration::ZERO, &["-B", "-t", "3"]);
    assert_eq!(lease, None, "C got a lease from the rogue server");
    assert!(
        rogue.log().contains("DHCPOFFER"),
        "the rogue server never saw C's discover, so the test proves nothing:\n{}",
        lab.logs()
    );
    wait_for_drops(&lab, &t.b.host.ns, "dhcp_snooping", 1);
}

#[test]
fn a_spoofed_neighbour_advertisement_leaves_lan_neighbour_entries_alone() {
    let Some(lab) = Lab::new("guard_na") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    let (l1_ip6, l2_ip6, v1_ip6) = ("fd00:50::11", "fd00:50::12", "fd00:50::101");
    t.l1.ns.add_addr("eth0", &format!("{l1_ip6}/64")).unwrap();
    t.l2.ns.add_addr("eth0", &format!("{l2_ip6}/64")).unwrap();
    v1.ns.add_addr("tap0", &format!("{v1_ip6}/64")).unwrap();
    // L2 knows L1; V1 reaches L1 too (it solicits a LAN host's address:
    // allowed).
    assert_ping(&lab, &t.l2.ns, l1_ip6);
    assert_ping(&lab, &v1.ns, l1_ip6);
    let entry = || t.l2.ns.neigh(l1_ip6).and_then(|n| n.mac);
    assert_eq!(entry(), Some(t.l1.mac));
    let cap = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    // V1 claims L1's address: unsolicited, override, to all nodes.
    let v1_mac = v1.ns.link_mac("tap0").unwrap();
    let na = format!(
        "na = (Ether(src='{v1_mac}', dst='33:33:00:00:00:01')\n\
         / IPv6(src='{v1_ip6}', dst='ff02::1', hlim=255)\n\
         / ICMPv6ND_NA(tgt='{l1_ip6}', R=0, S=0, O=1)\n\
         / ICMPv6NDOptDstLLAddr(lladdr='{v1_mac}'))\n\
         sendp(na, iface='tap0', count=3, inter=0.3)"
    );
    // Until the bridge has refused one by ND inspection (the first may be
    // held back while the bridge probes for the target, if it had not
    // seen L1 use it), or L2's entry moved.
    wait_until(EVENT, || {
        scapy(&v1.ns, &na);
        drops(&t.b.host.ns, "nd_inspection") >= 1 || entry() != Some(t.l1.mac)
    });
    assert_eq!(entry(), Some(t.l1.mac), "L2's entry for L1 was re-pointed");
    wait_for_drops(&lab, &t.b.host.ns, "nd_inspection", 1);
    assert_eq!(ping_count(&t.l2.ns, l1_ip6, 3, &[]), 3, "{}", lab.logs());
    assert_eq!(entry(), Some(t.l1.mac));
    let frames = cap.stop().unwrap();
    let spoofed: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.src() == Some(t.b.host.mac) && is_icmpv6(f, 136))
        .collect();
    assert!(
        spoofed.is_empty(),
        "the bridge put {} NAs on the LAN, e.g. {:02x?}",
        spoofed.len(),
        spoofed[0].data
    );
    assert!(
        !frames.iter().any(|f| f.contains_mac_bytes(v1_mac)),
        "V1's MAC reached the LAN"
    );
}

#[test]
fn a_lan_host_using_a_virtual_mac_takes_nothing_over() {
    let Some(lab) = Lab::new("guard_mirror") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    let v1_mac = v1.ns.link_mac("tap0").unwrap();
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    assert_ping(&lab, &v1.ns, &t.l1.ip);
    let cap = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    let at_b = t.b.host.ns.capture("eth0").unwrap();
    // L2 sends with V1's MAC: broadcast, and unicast to the bridge NIC for
    // V1's address (nothing answers either).
    let b_mac = t.b.host.mac;
    scapy(
        &t.l2.ns,
        &format!(
            "spoof = [Ether(src='{v1_mac}', dst='ff:ff:ff:ff:ff:ff')\n\
             / IP(src='{l2}', dst='255.255.255.255') / UDP(sport=9, dport=9) / b'mine',\n\
             Ether(src='{v1_mac}', dst='{b_mac}')\n\
             / IP(src='{l2}', dst='{v1}') / UDP(sport=9, dport=9) / b'mine']\n\
             sendp(spoof, iface='eth0', count=5, inter=0.05)",
            l2 = t.l2.ip,
            v1 = v1.ip
        ),
    );
    if !wait_until(EVENT, || drops(&t.b.host.ns, "mirror_guard") >= 10) {
        let frames = cap.stop().unwrap();
        let spoofed = frames.iter().filter(|f| f.src() == Some(v1_mac)).count();
        let b_frames = at_b.stop().unwrap();
        let b_spoofed = b_frames.iter().filter(|f| f.src() == Some(v1_mac)).count();
        panic!(
            "the bridge did not count 10 mirror_guard drops ({}); the LAN switch saw {spoofed} \
             frames from V1's MAC, {} in all; B's eth0 {b_spoofed} of {}; bridge: {}\n{}",
            drops(&t.b.host.ns, "mirror_guard"),
            frames.len(),
            b_frames.len(),
            bridge_status(&t.b.host.ns),
            lab.logs()
        );
    }
    // V1's traffic with the LAN is unharmed, both ways.
    assert_eq!(ping_count(&t.l1.ns, &v1.ip, 5, &[]), 5, "{}", lab.logs());
    assert_eq!(ping_count(&v1.ns, &t.l1.ip, 5, &[]), 5, "{}", lab.logs());
    assert_eq!(
        drops(&t.b.host.ns, "loop"),
        0,
        "V1's frames taken for a loop"
    );
    let frames = cap.stop().unwrap();
    let to_v1 = frames.iter().filter(|f| f.dst() == Some(v1_mac)).count();
    assert_eq!(to_v1, 0, "frames to V1's MAC on the LAN");
    let from_b = frames
        .iter()
        .filter(|f| f.src() == Some(b_mac) && f.contains_mac_bytes(v1_mac))
        .count();
    assert_eq!(from_b, 0, "the bridge put V1's MAC on the LAN");
    let lan_macs = bridge_status(&t.b.host.ns)["bridge"]["lan_macs"].to_string();
    assert!(
        !lan_macs.contains(&v1_mac.to_string()),
        "V1's MAC learned as a LAN MAC: {lan_macs}"
    );
}

#[test]
fn a_virtual_host_cannot_take_a_silent_lan_hosts_address() {
    let Some(lab) = Lab::new("guard_probe") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    // L3 is on the LAN at .13 but has sent nothing over IPv4: the bridge
    // has not seen it.
    let l3 = lan_host(&lab, &t.lan, "l3", &lan_ip(13));
    // L3 answers ARP on the LAN before V2 claims its address (a loaded
    // machine brings a new port up late: the bridge's probes then went
    // unanswered and it granted the claim). L1 asks: the bridge sees the
    // broadcast question, not L3's unicast answer.
    assert!(
        wait_until(EVENT, || t.l1.ns.arping("eth0", &l3.ip)),
        "L3 does not answer ARP on the LAN:\n{}",
        lab.logs()
    );
    let cap = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    // V2 is (mis)configured with L3's address and talks.
    let v2 = t.virtual_host(&lab, "v2", 13);
    assert!(
        !v2.ns.ping(&t.l1.ip, 2),
        "V2 reached the LAN with L3's address"
    );
    assert!(
        wait_until(EVENT, || {
            bridge_status(&t.b.host.ns)["bridge"]["nat"]["claims_refused"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        }),
        "the bridge refused no claim; its status: {}\n{}",
        bridge_status(&t.b.host.ns)["bridge"],
        lab.logs()
    );
    // The LAN still reaches L3 itself, at L3's MAC.
    assert_ping(&lab, &t.l1.ns, &l3.ip);
    assert_eq!(t.l1.ns.neigh(&l3.ip).and_then(|n| n.mac), Some(l3.mac));
    assert!(!v2.ns.ping(&t.l1.ip, 1), "V2 got L3's address after all");
    assert_eq!(t.l1.ns.neigh(&l3.ip).and_then(|n| n.mac), Some(l3.mac));
    // The probe L3 answered came from the bridge NIC, sender IP 0.0.0.0.
    let frames = cap.stop().unwrap();
    let probe = frames.iter().find_map(|f| {
        f.arp()
            .filter(|a| a.op == 1 && a.spa == [0, 0, 0, 0] && a.tpa == [192, 168, 50, 13])
            .map(|a| (f.src(), a.sha))
    });
    assert_eq!(
        probe,
        Some((Some(t.b.host.mac), t.b.host.mac)),
        "no ARP probe from the bridge NIC"
    );
}
