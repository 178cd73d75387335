//! Scenarios proving the harness itself works: connectivity through a switch,
//! cleanup on panic and on drop, and packet capture.

use std::{path::Path, time::Duration};

use lanbridge::core::mac::MacAddr;
use nix::sys::signal::Signal;

use crate::harness::{netns::NETNS_DIR, pcap, wait_until, Lab, LinkOpts};

#[test]
fn two_hosts_on_a_switch_ping_and_arping_each_other() {
    let Some(lab) = Lab::new("two_hosts_on_a_switch") else {
        return;
    };
    let lan = lab.switch("lan");
    let a = lab.ns("a");
    let b = lab.ns("b");
    let la = lab.plug(&a, "eth0", &lan, Some("10.0.0.1/24")).unwrap();
    let mac_b = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    let lb = lab
        .plug_with(
            &b,
            "eth0",
            &lan,
            LinkOpts::new().addr("10.0.0.2/24").mac(mac_b).mtu(1400),
        )
        .unwrap();
    eprintln!("lab setup took {:?}", lab.elapsed());

    assert_eq!(lb.mac, mac_b);
    assert_eq!(b.link_mac("eth0"), Some(mac_b));
    assert_eq!(b.link_mtu("eth0"), Some(1400));
    assert_eq!(a.link_mac("eth0"), Some(la.mac));
    assert!(
        lan.ns().has_link(&la.peer),
        "switch port {} missing",
        la.peer
    );
    assert!(!a.has_link("eth1"));

    assert!(a.ping("10.0.0.2", 1), "a cannot ping b");
    assert!(b.ping("10.0.0.1", 1), "b cannot ping a");
    let n = a.neigh("10.0.0.2").expect("a has no neighbour entry for b");
    assert_eq!(n.mac, Some(mac_b));
    assert_eq!(n.dev, "eth0");

    assert!(a.arping("eth0", "10.0.0.2"), "arping a -> b failed");
    assert!(
        !a.arping("eth0", "10.0.0.99"),
        "arping to an absent host succeeded"
    );
    assert!(!a.ping("10.0.0.99", 1));
}

#[test]
fn direct_veth_pair_connects_two_namespaces() {
    let Some(lab) = Lab::new("direct_veth_pair") else {
        return;
    };
    let a = lab.ns("a");
    let b = lab.ns("b");
    let (la, lb) = lab
        .veth(
            &a,
            "eth0",
            Some("10.1.0.1/30"),
            &b,
            "eth0",
            Some("10.1.0.2/30"),
        )
        .unwrap();
    assert_eq!(la.peer, "eth0");
    assert_ne!(la.mac, lb.mac);
    assert!(a.ping("10.1.0.2", 1));
    // IPv6 addresses skip DAD, so they work at once.
    a.add_addr("eth0", "fd00::1/64").unwrap();
    b.add_addr("eth0", "fd00::2/64").unwrap();
    assert!(a.ping("fd00::2", 1), "IPv6 ping failed");
}

#[test]
fn panicking_test_leaves_no_namespace_behind() {
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(lab) = Lab::new("panicking_test") else {
            return;
        };
        let lan = lab.switch("lan");
        let a = lab.ns("a");
        lab.plug(&a, "eth0", &lan, Some("10.0.0.1/24")).unwrap();
        a.spawn("sleep", &["100"]).unwrap();
        names = lab.namespace_names();
        assert!(names.iter().all(|n| Path::new(NETNS_DIR).join(n).exists()));
        panic!("deliberate panic mid-test");
    }));
    if names.is_empty() {
        return; // skipped: not root
    }
    assert!(result.is_err());
    for n in &names {
        assert!(
            !Path::new(NETNS_DIR).join(n).exists(),
            "namespace {n} left behind"
        );
    }
}

#[test]
fn dropping_the_lab_kills_spawned_children() {
    let Some(lab) = Lab::new("dropping_the_lab_kills") else {
        return;
    };
    let a = lab.ns("a");
    let sleeper = a.spawn("sleep", &["100"]).unwrap();
    let pid = sleeper.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(lab);
    assert!(!sleeper.is_running());
    // Reaped, so the pid is gone (or, rarely, reused by an unrelated process).
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .map_or(true, |c| !c.starts_with("sleep"))
    };
    assert!(gone(), "pid {pid} still running sleep");
}

#[test]
fn spawned_process_can_be_signalled_and_waited_for() {
    let Some(lab) = Lab::new("spawned_process_signal") else {
        return;
    };
    let a = lab.ns("a");
    let p = a
        .spawn(
            "sh",
            &[
                "-c",
                "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done",
            ],
        )
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || p
        .log()
        .contains("started")));
    assert!(p.wait_timeout(Duration::from_millis(100)).is_none());
    p.signal(Signal::SIGTERM).unwrap();
    let status = p
        .wait_timeout(Duration::from_secs(5))
        .expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(p.log().contains("bye"));
    assert!(lab.logs().contains("started"));
    assert!(
        p.signal(Signal::SIGTERM).is_err(),
        "signalled an exited process"
    );
}

#[test]
fn commands_run_inside_their_namespace() {
    let Some(lab) = Lab::new("commands_run_inside") else {
        return;
    };
    let a = lab.ns("a");
    assert!(Path::new(crate::harness::lanbridge_bin()).exists());
    let links = a.ip(&["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "expected only lo, got:\n{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    let out = a.try_run("sleep", &["10"], Duration::from_millis(200));
    assert!(out.is_err(), "timeout not enforced");
    // The namespace is a normal iproute2 named namespace, for debugging by hand.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", a.name(), "ip", "-o", "link", "show"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), links);
    assert!(String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout
    )
    .contains(a.name()));
    a.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let fwd = a
        .enter(|| Ok(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?))
        .unwrap();
    assert_eq!(fwd.trim(), "1");
}

#[test]
fn capture_sees_the_ping_between_the_two_macs() {
    let Some(lab) = Lab::new("capture_sees_the_ping") else {
        return;
    };
    let lan = lab.switch("lan");
    let a = lab.ns("a");
    let b = lab.ns("b");
    let la = lab.plug(&a, "eth0", &lan, Some("10.0.0.1/24")).unwrap();
    let lb = lab.plug(&b, "eth0", &lan, Some("10.0.0.2/24")).unwrap();
    let cap = a.capture("eth0").unwrap();
    let sw_cap = lan.ns().capture("br0").unwrap();
    assert!(a.ping("10.0.0.2", 2));
    let icmp_between = |f: &pcap::Frame, src: MacAddr, dst: MacAddr| {
        f.ethertype() == Some(pcap::ETHERTYPE_IPV4)
            && f.is_icmp4()
            && f.src() == Some(src)
            && f.dst() == Some(dst)
    };
    assert!(sw_cap.wait_for(Duration::from_secs(5), |fs| fs
        .iter()
        .any(|f| icmp_between(f, lb.mac, la.mac))));
    let frames = cap.stop().unwrap();
    assert!(
        frames
            .iter()
            .filter(|f| icmp_between(f, la.mac, lb.mac))
            .count()
            >= 2,
        "no echo requests"
    );
    assert!(
        frames
            .iter()
            .filter(|f| icmp_between(f, lb.mac, la.mac))
            .count()
            >= 2,
        "no echo replies"
    );
    let arp = frames
        .iter()
        .find_map(|f| f.arp())
        .expect("no ARP captured");
    assert!(arp.sha == la.mac || arp.sha == lb.mac);
    assert!(frames.iter().any(|f| f.mentions_mac(lb.mac)));
    assert!(!frames
        .iter()
        .any(|f| f.mentions_mac(MacAddr([0x02, 0xde, 0xad, 0, 0, 1]))));
    let sw_frames = sw_cap.stop().unwrap();
    assert!(sw_frames.iter().any(|f| icmp_between(f, la.mac, lb.mac)));
}

/// A pcap file with one 3-byte record, written in the given byte order.
fn pcap_bytes(big_endian: bool, nanos: bool) -> Vec<u8> {
    let w32 = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w16 = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut b = Vec::new();
    b.extend(w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    b.extend(w16(2));
    b.extend(w16(4));
    b.extend(w32(0));
    b.extend(w32(0));
    b.extend(w32(65535));
    b.extend(w32(pcap::LINKTYPE_ETHERNET));
    let frame: Vec<u8> = [[0xffu8; 6], [2, 0, 0, 0, 0, 1]]
        .concat()
        .into_iter()
        .chain([0x08, 0x06])
        .collect();
    b.extend(w32(7));
    b.extend(w32(500));
    b.extend(w32(frame.len() as u32));
    b.extend(w32(60));
    b.extend(&frame);
    b.extend(w32(8)); // truncated trailing record: ignored
    b
}

#[test]
fn pcap_reader_handles_both_byte_orders_and_units() {
    for (be, ns) in [(false, false), (true, false), (false, true), (true, true)] {
        let frames = pcap::parse(&pcap_bytes(be, ns)).unwrap();
        assert_eq!(frames.len(), 1, "be={be} ns={ns}");
        let f = &frames[0];
        assert_eq!(f.dst(), Some(MacAddr::BROADCAST));
        assert_eq!(f.src(), Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(f.ethertype(), Some(pcap::ETHERTYPE_ARP));
        assert_eq!(f.orig_len, 60);
        let sub = if ns {
            Duration::from_nanos(500)
        } else {
            Duration::from_micros(500)
        };
        assert_eq!(f.ts, Duration::from_secs(7) + sub);
        assert!(f.arp().is_none(), "14-byte frame has no ARP payload");
    }
    assert!(pcap::parse(&[0u8; 24]).is_err());
    assert!(pcap::parse(&[]).unwrap().is_empty());
}

#[test]
fn frames_show_their_udp_datagrams_and_patterns() {
    let payload = [2u8, 7, 0, 0, 0xde, 0xad, 0xbe, 0xef, 9, 9, 9];
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([172, 16, 0, 10], [172, 16, 0, 1], 64)
        .udp(40000, 7171);
    let mut data = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut data, &payload).unwrap();
    let whole = pcap::Frame {
        ts: Duration::ZERO,
        orig_len: data.len() as u32,
        data: data.clone(),
    };
    let u = whole.udp4().expect("a UDP datagram");
    assert_eq!(
        (u.src, u.dst, u.sport, u.dport),
        (
            "172.16.0.10".parse().unwrap(),
            "172.16.0.1".parse().unwrap(),
            40000,
            7171
        )
    );
    assert_eq!((u.payload, u.truncated), (&payload[..], false));
    assert_eq!(whole.ipv4_src(), Some("172.16.0.10".parse().unwrap()));
    assert!(whole.contains(&[0xde, 0xad, 0xbe, 0xef]));
    assert!(!whole.contains(&[0xde, 0xad, 0xbe, 0xee]) && !whole.contains(&[]));
    // Cut by a snap length: the payload as far as it was kept.
    let cut = pcap::Frame {
        data: data[..data.len() - 3].to_vec(),
        ..whole.clone()
    };
    let u = cut.udp4().unwrap();
    assert_eq!((u.payload, u.truncated), (&payload[..8], true));
    // Padded to the Ethernet minimum: the UDP length decides.
    let mut padded = whole;
    padded.data.resize(60, 0);
    assert_eq!(padded.udp4().unwrap().payload, &payload[..]);
}
