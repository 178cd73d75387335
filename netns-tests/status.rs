//! `lanbridge status` and `--metrics` against real processes: each role's
//! snapshot after traffic, the Prometheus endpoint, and how `status` finds
//! (or fails to find) its process in a namespace.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Output,
    time::Duration,
};

use lanbridge::status::{Role, Status};

use crate::{
    harness::{lanbridge_bin, wait_until, Lab, Ns, Proc},
    lan::{assert_ping, BridgedLan, SETTLE},
    overlay::{RELAY_IP, RELAY_PORT},
};

const METRICS: &str = "127.0.0.1:9171";

/// Runs `lanbridge status ARGS...` in `ns`.
fn status(ns: &Ns, args: &[&str]) -> Output {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    ns.run(lanbridge_bin(), &all)
}

/// `lanbridge status --json` in `ns`, parsed; panics with stderr on failure.
pub fn status_json(ns: &Ns, extra: &[&str]) -> Status {
    status_parsed(ns, extra)
}

/// `lanbridge status --json` in `ns` as plain JSON (fields looked up by
/// name); panics with stderr on failure.
pub fn status_value(ns: &Ns) -> serde_json::Value {
    status_parsed(ns, &[])
}

fn status_parsed<T: serde::de::DeserializeOwned>(ns: &Ns, extra: &[&str]) -> T {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = status(ns, &args);
    assert!(
        out.status.success(),
        "status in {} failed: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The IPv4 address (no prefix) on `ifname` in `ns`.
fn ipv4_of(ns: &Ns, ifname: &str) -> String {
    let out = ns.ip(&["-4", "-o", "addr", "show", "dev", ifname]);
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no IPv4 on {ifname}: {out}"));
    cidr.split('/').next().unwrap().to_string()
}

/// One HTTP/1.1 GET to `addr` from inside `ns`; returns the whole response.
fn http_get(ns: &Ns, addr: &str, path: &str) -> String {
    ns.enter(|| {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })
    .unwrap_or_else(|e| panic!("GET {path} in {}: {e:#}", ns.name()))
}

/// Starts a relay in `ns` on `port` with extra args; waits until it runs.
fn relay(ns: &Ns, key: &str, port: u16, extra: &[&str]) -> Proc {
    let listen = format!("{RELAY_IP}:{port}");
    let mut args = vec!["relay", "-v", "--listen", &listen, "--key-file", key];
    args.extend_from_slice(extra);
    let p = ns.spawn(lanbridge_bin(), &args).unwrap();
    let up = wait_until(Duration::from_secs(10), || {
        p.log().contains("relay running") || !p.is_running()
    });
    assert!(up && p.is_running(), "relay did not start:\n{}", p.log());
    p
}

/// A relay, a bridged LAN and two virtual hosts, after pings: the relay
/// lists all three peers at their underlay addresses, the bridge has learned
/// the virtual host's IP and L1's MAC, an edge is registered, the relay's
/// metrics endpoint answers, and `status` lists two processes in one
/// namespace and asks the one `--socket` names.
#[test]
fn status_and_metrics_show_a_working_network() {
    let Some(lab) = Lab::new("status") else {
        return;
    };
    let lan = BridgedLan::new(&lab);
    let key = lan.net.key.to_str().unwrap().to_string();
    // The same relay again, with metrics; peers register again by themselves.
    lan.net.relay.stop(Duration::from_secs(5));
    let relay_proc = relay(&lan.net.relay_ns, &key, RELAY_PORT, &["--metrics", METRICS]);
    let v1 = lan.virtual_host(&lab, "v1", 101);
    let v2 = lan.virtual_host(&lab, "v2", 102);
    assert_ping(&lab, &v1.ns, &v2.ip);
    assert_ping(&lab, &v1.ns, &lan.l1.ip);

    // Relay: found without options, three peers at their underlay addresses.
    let mut want = vec![
        ipv4_of(&lan.b.host.ns, "wan0"),
        ipv4_of(&v1.ns, "eth0"),
        ipv4_of(&v2.ns, "eth0"),
    ];
    want.sort();
    let mut got = Vec::new();
    let all_there = wait_until(SETTLE, || {
        let s = status_json(&lan.net.relay_ns, &[]);
        assert_eq!(s.role, Role::Relay);
        assert_eq!(s.pid, relay_proc.pid());
        let r = s.relay.expect("relay details");
        got = r
            .peers
            .iter()
            .map(|p| p.address.rsplit_once(':').unwrap().0.to_string())
            .collect();
        got.sort();
        got == want && r.networks.len() == 1 && r.networks[0].peers == 3
    });
    assert!(all_there, "relay peers {got:?}, want {want:?}");

    // Bridge: the virtual host's IP with its TAP's MAC; L1's MAC on the LAN.
    let b = status_json(&lan.b.host.ns, &[]);
    assert_eq!(b.role, Role::Bridge);
    let bridge = b.bridge.expect("bridge details");
    let v1_mac = v1.ns.link_mac("tap0").unwrap().to_string();
    assert!(
        bridge
            .ip_table
            .iter()
            .any(|e| e.ip == v1.ip && e.mac == v1_mac),
        "{} → {v1_mac} not in {:?}",
        v1.ip,
        bridge.ip_table
    );
    let l1_mac = lan.l1.mac.to_string();
    assert!(
        bridge.lan_macs.iter().any(|m| m.address == l1_mac),
        "{l1_mac} not in {:?}",
        bridge.lan_macs
    );
    assert_eq!(bridge.nic, "eth0");
    assert!(bridge.uplink.expect("relay uplink").registered);

    // Edge: registered, frames both ways.
    let e = status_json(&v1.ns, &[]);
    let edge = e.edge.expect("edge details");
    assert_eq!(edge.tap, "tap0");
    assert_eq!(edge.mac, v1_mac);
    assert!(edge.uplink.registered);
    assert!(edge.uplink.frames_in > 0 && edge.uplink.frames_out > 0);

    // The tables render too.
    let out = status(&lan.b.host.ns, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&v1.ip), "{text}");

    // Metrics, from inside the relay's namespace.
    let m = http_get(&lan.net.relay_ns, METRICS, "/metrics");
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(m.contains("Content-Type: text/plain; version=0.0.4"), "{m}");
    let peers_line = m
        .lines()
        .find(|l| l.starts_with("lanbridge_relay_peers{network=\""))
        .unwrap_or_else(|| panic!("no lanbridge_relay_peers in:\n{m}"));
    assert!(peers_line.ends_with(" 3"), "{peers_line}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("lanbridge_drops_total{reason=\"forged\"} ")),
        "{m}"
    );
    assert!(
        m.contains("lanbridge_info{role=\"relay\",version=\""),
        "{m}"
    );
    let nf = http_get(&lan.net.relay_ns, METRICS, "/nope");
    assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");

    // Two processes in one namespace: listed, and --socket picks one.
    let second = relay(&lan.net.relay_ns, &key, RELAY_PORT + 1, &[]);
    let names = [relay_proc.pid(), second.pid()].map(|p| format!("@lanbridge-relay-{p}"));
    let out = status(&lan.net.relay_ns, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--socket"), "{stderr}");
    for (name, pid) in names.iter().zip([relay_proc.pid(), second.pid()]) {
        assert!(
            stderr.contains(&format!("{name}  relay  pid {pid}")),
            "{stderr}"
        );
    }
    // A third with the same metrics address can't start, and says why.
    let listen = format!("{RELAY_IP}:{}", RELAY_PORT + 2);
    let out = lan.net.relay_ns.run(
        lanbridge_bin(),
        &[
            "relay",
            "--listen",
            &listen,
            "--key-file",
            &key,
            "--metrics",
            METRICS,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for metrics on {METRICS}: Address")),
        "{stderr}"
    );
    let with_at = status_json(&lan.net.relay_ns, &["--socket", &names[1]]);
    assert_eq!(with_at.pid, second.pid());
    let without_at = status_json(&lan.net.relay_ns, &["--socket", &names[0][1..]]);
    assert_eq!(without_at.pid, relay_proc.pid());
}

/// With no lanbridge in the namespace, `status` exits 1 and says so.
#[test]
fn status_without_a_process_says_so() {
    let Some(lab) = Lab::new("status_none") else {
        return;
    };
    let ns = lab.ns("empty");
    let out = status(&ns, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "lanbridge: error: no lanbridge process in this network namespace"
    );
}
