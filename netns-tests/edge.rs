//! Virtual LAN scenarios: edges reach each other through the relay.

use std::{net::UdpSocket, time::Duration};

use lanbridge::core::{proto::RelayKey, wire::NetworkKey};
use nix::sys::signal::Signal;

use crate::{
    harness::{lanbridge_bin, wait_until, Lab},
    overlay::{key_file, ping_count, ping_within, start_relay, Overlay, RELAY_IP, RELAY_PORT},
};

const SETTLE: Duration = Duration::from_secs(15);

#[test]
fn two_edges_ping_each_other_through_the_relay() {
    let Some(lab) = Lab::new("two_edges_ping") else {
        return;
    };
    let net = Overlay::new(&lab);
    let a = net.edge(&lab, "a", 1);
    let b = net.edge(&lab, "b", 2);
    assert!(
        ping_within(&a.ns, &b.ip, SETTLE),
        "a cannot ping b:\n{}",
        lab.logs()
    );
    assert!(b.ns.ping(&a.ip, 2), "b cannot ping a:\n{}", lab.logs());
    // ARP resolved over the relay: a knows b's TAP MAC.
    let n = a.ns.neigh(&b.ip).expect("a has no neighbour entry for b");
    assert_eq!(n.mac, b.ns.link_mac("tap0"));
    assert!(a.ns.arping("tap0", &b.ip), "arping a -> b failed");
}

#[test]
fn three_edges_reach_all_pairs() {
    let Some(lab) = Lab::new("three_edges") else {
        return;
    };
    let net = Overlay::new(&lab);
    let edges = [
        net.edge(&lab, "a", 1),
        net.edge(&lab, "b", 2),
        net.edge(&lab, "c", 3),
    ];
    for from in &edges {
        for to in &edges {
            if from.ip != to.ip {
                assert!(
                    ping_within(&from.ns, &to.ip, SETTLE),
                    "{} cannot ping {}:\n{}",
                    from.ip,
                    to.ip,
                    lab.logs()
                );
            }
        }
    }
}

#[test]
fn full_size_frames_cross_a_1500_byte_underlay() {
    let Some(lab) = Lab::new("full_size_frames") else {
        return;
    };
    let net = Overlay::new(&lab);
    let a = net.edge(&lab, "a", 1);
    let b = net.edge(&lab, "b", 2);
    assert_eq!(a.ns.link_mtu("eth0"), Some(1500));
    assert!(ping_within(&a.ns, &b.ip, SETTLE), "{}", lab.logs());
    // 1472 bytes of ICMP payload + 28 = a 1500-byte IP packet, 1514-byte frame.
    let got = ping_count(&a.ns, &b.ip, 5, &["-M", "do", "-s", "1472"]);
    assert_eq!(got, 5, "full-size pings lost:\n{}", lab.logs());
    let got = ping_count(&b.ns, &a.ip, 5, &["-M", "do", "-s", "1472"]);
    assert_eq!(got, 5, "full-size pings lost:\n{}", lab.logs());
}

#[test]
fn traffic_resumes_after_the_relay_restarts() {
    let Some(lab) = Lab::new("relay_restart") else {
        return;
    };
    let net = Overlay::new(&lab);
    // Through the relay: a direct path would carry the pings while it is
    // dead.
    let a = net.edge_with(&lab, "a", 1, &net.key, &["--no-direct"]);
    let b = net.edge_with(&lab, "b", 2, &net.key, &["--no-direct"]);
    assert!(ping_within(&a.ns, &b.ip, SETTLE), "{}", lab.logs());
    net.relay.signal(Signal::SIGKILL).unwrap();
    net.relay
        .wait_timeout(Duration::from_secs(5))
        .expect("relay did not die");
    assert!(!a.ns.ping(&b.ip, 1), "ping worked with the relay dead");
    let _relay2 = start_relay(&net.relay_ns, &net.relay_key);
    assert!(
        ping_within(&a.ns, &b.ip, Duration::from_secs(30)),
        "traffic did not resume within 30 s:\n{}",
        lab.logs()
    );
    assert!(b.ns.ping(&a.ip, 1));
    assert!(
        a.proc.is_running() && b.proc.is_running(),
        "an edge restarted"
    );
}

#[test]
fn an_edge_with_another_key_reaches_no_one() {
    let Some(lab) = Lab::new("other_key") else {
        return;
    };
    let net = Overlay::new(&lab);
    let a = net.edge(&lab, "a", 1);
    let b = net.edge(&lab, "b", 2);
    let other = key_file(&lab, "other.key");
    let x = net.edge_with_key(&lab, "x", 3, &other);
    assert!(ping_within(&a.ns, &b.ip, SETTLE), "{}", lab.logs());
    assert!(!x.ns.ping(&a.ip, 3), "x reached a with the wrong key");
    assert!(!a.ns.ping(&x.ip, 3), "a reached x across networks");
    assert!(x.proc.is_running(), "x died:\n{}", x.proc.log());
    assert!(
        wait_until(Duration::from_secs(12), || net
            .relay
            .log()
            .contains("wrong_network")),
        "relay did not report x's datagrams:\n{}",
        net.relay.log()
    );
}

#[test]
fn random_datagrams_do_not_disturb_traffic() {
    let Some(lab) = Lab::new("random_datagrams") else {
        return;
    };
    let net = Overlay::new(&lab);
    let a = net.edge(&lab, "a", 1);
    let b = net.edge(&lab, "b", 2);
    let (attacker, _) = net.host(&lab, "evil");
    assert!(ping_within(&a.ns, &b.ip, SETTLE), "{}", lab.logs());

    let key = std::fs::read_to_string(&net.key).unwrap();
    let network_id = RelayKey::derive(&NetworkKey::parse(&key).unwrap()).network_id();
    let flood = std::thread::spawn(move || {
        attacker
            .enter(|| {
                let sock = UdpSocket::bind("0.0.0.0:0")?;
                let mut state = 0x9e37_79b9_7f4a_7c15u64;
                let mut buf = [0u8; 1500];
                for i in 0..6000u32 {
                    for b in buf.iter_mut() {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        *b = state as u8;
                    }
                    let mut len = 1 + (state as usize % buf.len());
                    // Two in three carry a valid version 2 header, so they
                    // reach the checks behind it: a handshake initiation of
                    // the real network (mac1), or a Data datagram with a
                    // random session index (the relay's session lookup).
                    if i % 3 == 0 {
                        len = 160;
                        buf[..4].copy_from_slice(&[2, 1, 0, 0]);
                        buf[8..16].copy_from_slice(&network_id.0);
                    } else if i % 3 == 1 && len > 70 {
                        buf[..4].copy_from_slice(&[2, 7, 0, 0]);
                    }
                    let _ = sock.send_to(&buf[..len], (RELAY_IP, RELAY_PORT));
                    if i % 500 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                Ok(())
            })
            .unwrap();
    });
    let during = ping_count(&a.ns, &b.ip, 20, &[]);
    flood.join().unwrap();
    // The relay may still be working through the flood's backlog (each
    // datagram with a valid header costs it a BLAKE3 or a lookup): let it
    // drain, bounded, before asking for a loss-free run.
    assert!(
        ping_within(&a.ns, &b.ip, SETTLE),
        "no traffic after the flood:\n{}",
        lab.logs()
    );
    let after = ping_count(&a.ns, &b.ip, 10, &[]);
    assert!(
        during >= 18,
        "only {during}/20 pings during the flood:\n{}",
        lab.logs()
    );
    assert_eq!(after, 10, "pings lost after the flood:\n{}", lab.logs());
    assert!(net.relay.is_running(), "relay died:\n{}", net.relay.log());
}

#[test]
fn sigterm_exits_zero_and_removes_the_tap() {
    let Some(lab) = Lab::new("sigterm") else {
        return;
    };
    let net = Overlay::new(&lab);
    let a = net.edge(&lab, "a", 1);
    assert!(wait_until(Duration::from_secs(5), || a
        .proc
        .log()
        .contains("registered")));
    a.proc.signal(Signal::SIGTERM).unwrap();
    let status = a
        .proc
        .wait_timeout(Duration::from_secs(1))
        .expect("edge still running 1 s after SIGTERM");
    assert!(
        status.success(),
        "edge exited with {status}:\n{}",
        a.proc.log()
    );
    assert!(!a.ns.has_link("tap0"), "tap0 still exists");
    net.relay.signal(Signal::SIGTERM).unwrap();
    let status = net
        .relay
        .wait_timeout(Duration::from_secs(1))
        .expect("relay still running 1 s after SIGTERM");
    assert!(status.success(), "relay exited with {status}");
}

#[test]
fn a_relay_on_a_wildcard_address_answers_from_the_address_it_was_reached_at() {
    let Some(lab) = Lab::new("relay_wildcard") else {
        return;
    };
    let net = Overlay::new(&lab);
    net.relay.signal(Signal::SIGTERM).unwrap();
    net.relay
        .wait_timeout(Duration::from_secs(2))
        .expect("relay did not stop");
    // Make the relay's address secondary: the kernel would pick 172.16.0.2
    // as the source of anything sent towards the edges.
    let relay_cidr = format!("{RELAY_IP}/24");
    net.relay_ns
        .ip(&["addr", "del", &relay_cidr, "dev", "eth0"]);
    net.relay_ns
        .ip(&["addr", "add", "172.16.0.2/24", "dev", "eth0"]);
    net.relay_ns
        .ip(&["addr", "add", &relay_cidr, "dev", "eth0"]);
    let key = net.key.to_str().unwrap();
    let relay = net
        .relay_ns
        .spawn(
            lanbridge_bin(),
            &["relay", "-v", "--listen", "0.0.0.0:7171", "--key-file", key],
        )
        .unwrap();
    let a = net.edge(&lab, "a", 1);
    let b = net.edge(&lab, "b", 2);
    assert!(
        ping_within(&a.ns, &b.ip, SETTLE),
        "edges reaching the relay at {RELAY_IP} got no answer:\n{}",
        lab.logs()
    );
    assert!(relay.is_running());
}

/// `/etc/netns/NAME/hosts` for one namespace (what `ip netns exec` mounts
/// over `/etc/hosts`), removed on drop.
struct NetnsHosts(std::path::PathBuf);

impl NetnsHosts {
    fn new(ns: &crate::harness::Ns) -> NetnsHosts {
        let dir = std::path::Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        NetnsHosts(dir)
    }

    /// Rewrites the file in place, so a running process sees the change.
    fn set(&self, line: &str) {
        std::fs::write(self.0.join("hosts"), format!("{line}\n")).unwrap();
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn edges_follow_a_relay_whose_name_moves_to_a_new_address() {
    let Some(lab) = Lab::new("relay_moves") else {
        return;
    };
    let net = Overlay::new(&lab);
    let mut edges = Vec::new();
    for (short, n) in [("a", 1), ("b", 2)] {
        let (ns, _) = net.host(&lab, short);
        let hosts = NetnsHosts::new(&ns);
        hosts.set(&format!("{RELAY_IP} relay.test"));
        let ip = format!("10.10.0.{n}");
        let proc = ns
            .spawn(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns.name(),
                    lanbridge_bin(),
                    "edge",
                    "-v",
                    "--relay",
                    &format!("relay.test:{RELAY_PORT}"),
                    "--key-file",
                    net.key.to_str().unwrap(),
                    "--tap",
                    "tap0",
                    "--address",
                    &format!("{ip}/24"),
                    // Through the relay: a direct path would carry the
                    // pings without it.
                    "--no-direct",
                ],
            )
            .unwrap();
        edges.push((ns, hosts, proc, ip));
    }
    let (a, b) = (&edges[0], &edges[1]);
    assert!(ping_within(&a.0, &b.3, SETTLE), "{}", lab.logs());

    // The relay moves to another address, and its name follows.
    net.relay.signal(Signal::SIGKILL).unwrap();
    net.relay
        .wait_timeout(Duration::from_secs(5))
        .expect("relay did not die");
    net.relay_ns
        .ip(&["addr", "add", "172.16.0.3/24", "dev", "eth0"]);
    let _moved = net
        .relay_ns
        .spawn(
            lanbridge_bin(),
            &[
                "relay",
                "-v",
                "--listen",
                &format!("172.16.0.3:{RELAY_PORT}"),
                "--key-file",
                net.relay_key.to_str().unwrap(),
            ],
        )
        .unwrap();
    for (_, hosts, _, _) in &edges {
        hosts.set("172.16.0.3 relay.test");
    }
    assert!(
        ping_within(&a.0, &b.3, Duration::from_secs(45)),
        "the edges did not follow the relay's name:\n{}",
        lab.logs()
    );
    assert!(a.2.log().contains("the relay moved"), "{}", a.2.log());
}
