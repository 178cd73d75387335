//! Bridge scenarios: a physical LAN (lan.rs) joins the virtual LAN through
//! `lanbridge bridge` on one of its hosts, checked with real tools.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::{
    harness::{lanbridge_bin, wait_until, Frame, Lab, Switch},
    lan::{
        assert_ping, dhcp_client, dhcp_server, diff_bytes, lan_host, lan_ip, pseudo_random,
        relay_bridge, start_bridge, tcp_transfer, virtual_host, BridgedLan, DHCP_FIRST, DHCP_LAST,
    },
    overlay::{key_file, ping_count, Overlay},
};

#[test]
fn lan_and_virtual_hosts_ping_and_arping_each_other() {
    let Some(lab) = Lab::new("bridge_ping_arping") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    let v2 = t.virtual_host(&lab, "v2", 102);
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    assert_ping(&lab, &v1.ns, &t.l1.ip);
    assert_ping(&lab, &v1.ns, &v2.ip);
    assert_ping(&lab, &v2.ns, &v1.ip);
    assert_ping(&lab, &v2.ns, &t.l2.ip);
    for (ns, iface, dst) in [
        (&t.l1.ns, "eth0", &v1.ip),
        (&v1.ns, "tap0", &t.l1.ip),
        (&v1.ns, "tap0", &v2.ip),
        (&v2.ns, "tap0", &v1.ip),
    ] {
        assert!(
            ns.arping(iface, dst),
            "arping {} -> {dst} failed:\n{}",
            ns.short(),
            lab.logs()
        );
    }
}

#[test]
fn lan_hosts_see_virtual_ips_at_the_bridge_nic_mac() {
    let Some(lab) = Lab::new("bridge_neigh_mac") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    let n =
        t.l1.ns
            .neigh(&v1.ip)
            .unwrap_or_else(|| panic!("L1 has no neighbour entry for V1:\n{}", lab.logs()));
    assert_eq!(
        n.mac,
        Some(t.b.host.mac),
        "L1 sees V1 at {:?}, not at the bridge NIC's MAC {} (V1's TAP is {:?})",
        n.mac,
        t.b.host.mac,
        v1.ns.link_mac("tap0")
    );
    // The other way round, V1 sees L1 at L1's own MAC.
    assert_ping(&lab, &v1.ns, &t.l1.ip);
    let n = v1.ns.neigh(&t.l1.ip).expect("V1 has no entry for L1");
    assert_eq!(n.mac, Some(t.l1.mac));
}

#[test]
fn no_virtual_mac_ever_reaches_the_lan() {
    let Some(lab) = Lab::new("bridge_no_virtual_mac") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    let v2 = t.virtual_host(&lab, "v2", 102);
    let macs = [
        v1.ns.link_mac("tap0").unwrap(),
        v2.ns.link_mac("tap0").unwrap(),
    ];
    let cap = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    assert_ping(&lab, &v1.ns, &t.l1.ip);
    assert_ping(&lab, &v2.ns, &t.l2.ip);
    assert_ping(&lab, &v1.ns, &v2.ip);
    assert!(t.l1.ns.arping("eth0", &v2.ip), "{}", lab.logs());
    assert!(v1.ns.arping("tap0", &t.l2.ip), "{}", lab.logs());
    assert_eq!(ping_count(&t.l2.ns, &v1.ip, 5, &[]), 5, "{}", lab.logs());
    assert_eq!(ping_count(&v2.ns, &t.l1.ip, 5, &[]), 5, "{}", lab.logs());
    let frames = cap.stop().unwrap();
    assert!(!frames.is_empty(), "captured nothing on the LAN");
    let bad: Vec<&Frame> = frames
        .iter()
        .filter(|f| macs.iter().any(|m| f.mentions_mac(*m)))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} frames on the LAN mention a virtual MAC ({:?}), e.g. {:02x?}",
        bad.len(),
        frames.len(),
        macs,
        bad[0].data
    );
    // Replies of virtual hosts appeared on the LAN, from the bridge NIC.
    let icmp_from_b = frames
        .iter()
        .filter(|f| f.is_icmp4() && f.src() == Some(t.b.host.mac))
        .count();
    assert!(
        icmp_from_b > 0,
        "no ICMP from the bridge NIC among {} frames",
        frames.len()
    );
}

#[test]
fn full_size_frames_cross_between_lan_and_virtual_hosts() {
    let Some(lab) = Lab::new("bridge_full_size") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    // 1472 bytes of ICMP payload + 28 = a 1500-byte IP packet, 1514-byte frame.
    let big = ["-M", "do", "-s", "1472"];
    let got = ping_count(&t.l1.ns, &v1.ip, 5, &big);
    assert_eq!(got, 5, "L1 -> V1 full-size pings lost:\n{}", lab.logs());
    let got = ping_count(&v1.ns, &t.l1.ip, 5, &big);
    assert_eq!(got, 5, "V1 -> L1 full-size pings lost:\n{}", lab.logs());
}

#[test]
fn tcp_bulk_transfer_is_exact_both_ways_with_default_offloads() {
    let Some(lab) = Lab::new("bridge_tcp_bulk") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    let timeout = Duration::from_secs(60);
    let data = pseudo_random(8 << 20, 0x5eed);
    let got = tcp_transfer(&t.l1.ns, &v1.ns, &v1.ip, 5001, &data, timeout)
        .unwrap_or_else(|e| panic!("L1 -> V1: {e:#}\n{}", lab.logs()));
    assert!(
        got == data,
        "L1 -> V1: {}\n{}",
        diff_bytes(&data, &got),
        lab.logs()
    );
    let data = pseudo_random(8 << 20, 0xfeed);
    let got = tcp_transfer(&v1.ns, &t.l1.ns, &t.l1.ip, 5002, &data, timeout)
        .unwrap_or_else(|e| panic!("V1 -> L1: {e:#}\n{}", lab.logs()));
    assert!(
        got == data,
        "V1 -> L1: {}\n{}",
        diff_bytes(&data, &got),
        lab.logs()
    );
}

#[test]
fn a_virtual_host_gets_a_lease_from_the_lans_dhcp_server() {
    let Some(lab) = Lab::new("bridge_dhcp") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let _dnsmasq = dhcp_server(&lab, &t.l2.ns, "eth0");
    let v3 = t.net.edge_at(&lab, "v3", None);
    // udhcpc without -B asks for unicast replies: the bridge must set the
    // broadcast flag, or the OFFER goes to a MAC the LAN never sees.
    let ip = dhcp_client(&lab, &v3.ns, "tap0", Duration::from_secs(40))
        .unwrap_or_else(|| panic!("V3 got no lease:\n{}", lab.logs()));
    assert!(
        (DHCP_FIRST..=DHCP_LAST).contains(&ip),
        "lease {ip} outside the pool"
    );
    assert_ping(&lab, &t.l1.ns, &ip.to_string());
    assert_ping(&lab, &v3.ns, &t.l1.ip);
}

#[test]
fn the_bridge_host_still_talks_to_its_lan() {
    let Some(lab) = Lab::new("bridge_host_itself") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    // The bridge is busy with virtual traffic...
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    // ...and B and L1 resolve each other afresh and ping both ways.
    t.b.host.ns.ip(&["neigh", "flush", "dev", "eth0"]);
    t.l1.ns.ip(&["neigh", "flush", "dev", "eth0"]);
    assert!(
        t.b.host.ns.ping(&t.l1.ip, 3),
        "B cannot ping L1:\n{}",
        lab.logs()
    );
    assert!(
        t.l1.ns.ping(&t.b.host.ip, 3),
        "L1 cannot ping B:\n{}",
        lab.logs()
    );
    assert_eq!(
        t.l1.ns.neigh(&t.b.host.ip).and_then(|n| n.mac),
        Some(t.b.host.mac)
    );
    assert_eq!(
        t.b.host.ns.neigh(&t.l1.ip).and_then(|n| n.mac),
        Some(t.l1.mac)
    );
    assert!(t.b.proc.is_running(), "{}", t.b.proc.log());
}

#[test]
fn two_bridged_lans_and_a_virtual_host_form_one_subnet() {
    let Some(lab) = Lab::new("bridge_two_lans") else {
        return;
    };
    let net = Overlay::new(&lab);
    let lan_a = lab.switch("lana");
    let lan_b = lab.switch("lanb");
    let l1 = lan_host(&lab, &lan_a, "l1", &lan_ip(11));
    let l3 = lan_host(&lab, &lan_b, "l3", &lan_ip(13));
    let _ba = relay_bridge(&lab, &net, &lan_a, "ba", &lan_ip(2));
    let _bb = relay_bridge(&lab, &net, &lan_b, "bb", &lan_ip(3));
    let v1 = virtual_host(&lab, &net, "v1", &lan_ip(101));
    let hosts = [(&l1.ns, &l1.ip), (&l3.ns, &l3.ip), (&v1.ns, &v1.ip)];
    for (from, _) in hosts {
        for (to_ns, to) in hosts {
            if from.name() != to_ns.name() {
                assert_ping(&lab, from, to);
            }
        }
    }
}

#[test]
fn local_tap_mode_bridges_a_vm_into_the_lan() {
    let Some(lab) = Lab::new("bridge_local_tap") else {
        return;
    };
    let lan = lab.switch("lan");
    let l1 = lan_host(&lab, &lan, "l1", &lan_ip(11));
    let b = lan_host(&lab, &lan, "b", &lan_ip(2));
    let bridge = start_bridge(&b.ns, &["--tap", "vm0"]);
    assert!(
        wait_until(Duration::from_secs(5), || b.ns.has_link("vm0")),
        "the bridge made no vm0:\n{}",
        bridge.log()
    );
    let vm = lab.ns("vm");
    b.ns.ip(&["link", "set", "vm0", "netns", vm.name()]);
    vm.add_addr("vm0", &format!("{}/24", lan_ip(120))).unwrap();
    vm.set_link_up("vm0", true).unwrap();
    assert_ping(&lab, &vm, &l1.ip);
    assert_ping(&lab, &l1.ns, &lan_ip(120));
    assert_eq!(
        l1.ns.neigh(&lan_ip(120)).and_then(|n| n.mac),
        Some(b.mac),
        "L1 does not see the VM at B's MAC"
    );
    assert!(bridge.is_running(), "{}", bridge.log());
}

#[test]
fn sigterm_stops_the_bridge_with_status_zero() {
    let Some(lab) = Lab::new("bridge_sigterm") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    t.b.proc.signal(Signal::SIGTERM).unwrap();
    let status =
        t.b.proc
            .wait_timeout(Duration::from_secs(1))
            .unwrap_or_else(|| panic!("bridge still running 1 s after SIGTERM:\n{}", lab.logs()));
    assert!(
        status.success(),
        "bridge exited with {status}:\n{}",
        t.b.proc.log()
    );
}

#[test]
fn a_missing_interface_is_one_clear_error() {
    let Some(lab) = Lab::new("bridge_no_iface") else {
        return;
    };
    let ns = lab.ns("b");
    let key = key_file(&lab, "net.key");
    let out = ns
        .try_run(
            lanbridge_bin(),
            &[
                "bridge",
                "--iface",
                "nosuch0",
                "--relay",
                "172.16.0.1:7171",
                "--key-file",
                key.to_str().unwrap(),
            ],
            Duration::from_secs(10),
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line:\n{stderr}"
    );
    assert!(
        stderr.contains("no such interface: nosuch0"),
        "expected `no such interface: nosuch0` in:\n{stderr}"
    );
}

#[test]
fn the_bridge_survives_its_nic_going_down_and_up() {
    let Some(lab) = Lab::new("bridge_link_flap") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    t.b.host.ns.set_link_up("eth0", false).unwrap();
    // Traffic in both directions while the NIC is down.
    assert!(!t.l1.ns.ping(&v1.ip, 1), "ping crossed a downed NIC");
    assert!(!v1.ns.ping(&t.l1.ip, 1), "ping crossed a downed NIC");
    t.b.host.ns.set_link_up("eth0", true).unwrap();
    assert!(
        t.b.proc.is_running(),
        "the bridge died:\n{}",
        t.b.proc.log()
    );
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    assert_ping(&lab, &v1.ns, &t.l1.ip);
}

/// Sends `frame` raw on `iface` of the calling thread's namespace.
fn send_raw(iface: &str, frame: &[u8]) -> std::io::Result<()> {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain libc calls on a socket this function owns and closes.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n < 0 {
            return Err(err);
        }
    }
    Ok(())
}

#[test]
fn frames_of_other_vlans_stay_off_the_overlay() {
    let Some(lab) = Lab::new("bridge_vlan") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    // An ARP broadcast on VLAN 10 of the same wire, sent raw from L1 (the
    // test kernel may lack 8021q, so no VLAN interface is made).
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&t.l1.mac.0);
    frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x08, 0x06]);
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&t.l1.mac.0);
    frame.extend_from_slice(&[10, 77, 0, 11, 0, 0, 0, 0, 0, 0, 10, 77, 0, 12]);
    frame.resize(64, 0);
    let capture = v1.ns.capture("tap0").unwrap();
    t.l1.ns
        .enter(|| {
            for _ in 0..5 {
                send_raw("eth0", &frame)?;
            }
            Ok(())
        })
        .unwrap();
    // Untagged traffic still crosses, and marks the end of the capture.
    assert_ping(&lab, &t.l1.ns, &v1.ip);
    let frames = capture.stop().unwrap();
    let leaked: Vec<_> = frames
        .iter()
        .filter(|f| {
            f.data.get(12..14) == Some(&[0x81, 0x00])
                || f.arp()
                    .is_some_and(|a| a.spa[..3] == [10, 77, 0] || a.tpa[..3] == [10, 77, 0])
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "{} VLAN 10 frames reached a virtual host: {leaked:?}",
        leaked.len()
    );
    let status = t.b.host.ns.run(lanbridge_bin(), &["status", "--json"]);
    let json = String::from_utf8_lossy(&status.stdout);
    assert!(
        json.contains("\"vlan\": 5"),
        "the bridge did not count 5 VLAN drops:\n{json}"
    );
}

#[test]
fn the_bridge_follows_address_changes_of_its_nic() {
    let Some(lab) = Lab::new("bridge_addr_follow") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let host_addresses = || {
        let out = t.b.host.ns.run(lanbridge_bin(), &["status", "--json"]);
        let json = String::from_utf8_lossy(&out.stdout).into_owned();
        let start = json.find("\"host_addresses\"").map_or(0, |i| i);
        json[start..].split(']').next().unwrap_or("").to_string()
    };
    assert!(
        host_addresses().contains("192.168.50.2"),
        "{}",
        host_addresses()
    );
    t.b.host
        .ns
        .ip(&["addr", "add", "192.168.50.3/24", "dev", "eth0"]);
    assert!(
        wait_until(Duration::from_secs(6), || host_addresses()
            .contains("192.168.50.3")),
        "the bridge did not pick up a new address: {}",
        host_addresses()
    );
    t.b.host
        .ns
        .ip(&["addr", "del", "192.168.50.3/24", "dev", "eth0"]);
    assert!(
        wait_until(Duration::from_secs(6), || !host_addresses()
            .contains("192.168.50.3")),
        "the bridge kept a removed address: {}",
        host_addresses()
    );
}

#[test]
fn ip_forwarding_on_the_bridged_nic_is_warned_about_at_start() {
    let Some(lab) = Lab::new("bridge_forwarding") else {
        return;
    };
    let net = Overlay::new(&lab);
    let lan = lab.switch("lan");
    let host = lan_host(&lab, &lan, "b", &lan_ip(2));
    net.plug(&lab, &host.ns, "wan0");
    host.ns
        .sysctl("net.ipv4.conf.eth0.forwarding", "1")
        .unwrap();
    let relay = format!(
        "{}:{}",
        crate::overlay::RELAY_IP,
        crate::overlay::RELAY_PORT
    );
    let proc = start_bridge(
        &host.ns,
        &["--relay", &relay, "--key-file", net.key.to_str().unwrap()],
    );
    assert!(
        proc.log().contains("IP forwarding is on for eth0"),
        "no warning about IP forwarding:\n{}",
        proc.log()
    );
}

#[test]
fn ipv6_neighbour_discovery_and_ping_cross_the_bridge() {
    let Some(lab) = Lab::new("bridge_ipv6") else {
        return;
    };
    let t = BridgedLan::new(&lab);
    let v1 = t.virtual_host(&lab, "v1", 101);
    let v1_mac = v1.ns.link_mac("tap0").unwrap();
    let cap = t.lan.ns().capture(Switch::BRIDGE).unwrap();
    t.l1.ns.add_addr("eth0", "fd00:50::11/64").unwrap();
    v1.ns.add_addr("tap0", "fd00:50::101/64").unwrap();
    assert_ping(&lab, &t.l1.ns, "fd00:50::101");
    assert_ping(&lab, &v1.ns, "fd00:50::11");
    let frames = cap.stop().unwrap();
    assert!(
        frames.iter().any(|f| f.ethertype() == Some(0x86dd)),
        "the capture saw no IPv6"
    );
    // Not as Ethernet address, nor anywhere in a payload (NDP options).
    let leaks: Vec<_> = frames
        .iter()
        .filter(|f| f.contains_mac_bytes(v1_mac))
        .collect();
    assert!(leaks.is_empty(), "V1's MAC reached the LAN: {leaks:?}");
    // NDP was translated: L1 sees the virtual host at the bridge NIC's MAC.
    let n =
        t.l1.ns
            .neigh("fd00:50::101")
            .expect("L1 has no IPv6 neighbour entry for V1");
    assert_eq!(n.mac, Some(t.b.host.mac), "{n:?}");
    let n = v1
        .ns
        .neigh("fd00:50::11")
        .expect("V1 has no IPv6 neighbour entry for L1");
    assert_eq!(n.mac, Some(t.l1.mac), "{n:?}");
}
