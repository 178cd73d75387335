//! Micro-benchmark of the sans-IO core: frames per second through the wire
//! codec (send: segment and seal; relay; receive: open, reassemble, coalesce) and the bridge's NAT engine, no
//! sockets, no namespaces.
//!
//! `cargo bench --bench core` (or `cargo bench --bench core -- seal` to run
//! the cases whose name contains "seal"). Every case runs a fixed number of
//! frames, so a run is bounded; numbers are throughput of one core.

use std::{
    hint::black_box,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use lanbridge::core::{
    client::{ClientConfig, ClientEvent},
    mac::MacAddr,
    memnet::{member_addr, MemNet, RELAY},
    nat::{LanMeta, Nat, NatConfig, PacketType, Verdict},
    offload::{self, VnetHdr},
    relay::RelayAction,
    wire::{self, NetworkKey},
};

const VIRTUAL: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
const LAN: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
const NIC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);

/// A TCP/IPv4 frame of `len` bytes from `src` to `dst`.
fn tcp_frame(src: (MacAddr, Ipv4Addr), dst: (MacAddr, Ipv4Addr), len: usize) -> Vec<u8> {
    let payload = vec![0x5au8; len - 14 - 20 - 20];
    let mut v = Vec::with_capacity(len);
    PacketBuilder::ethernet2(src.0 .0, dst.0 .0)
        .ipv4(src.1.octets(), dst.1.octets(), 64)
        .tcp(40000, 5201, 1, 65535)
        .write(&mut v, &payload)
        .expect("frame builds");
    v
}

struct Case {
    name: String,
    frames: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Case {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        println!(
            "{:<44} {:>12.0} frames/s {:>8.2} Gbit/s {:>9.0} ns/frame",
            self.name,
            self.frames as f64 / secs,
            self.bytes as f64 * 8.0 / secs / 1e9,
            secs * 1e9 / self.frames as f64,
        );
    }
}

/// Name filters from the command line; empty runs every case.
static FILTER: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn wanted(name: &str) -> bool {
    let filter = FILTER.get_or_init(Vec::new);
    filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()))
}

/// Runs `f` once per frame, `frames` times, and returns the timing; a case
/// the filter leaves out does not run (0 frames).
fn run(name: String, frames: u64, frame_len: usize, mut f: impl FnMut()) -> Case {
    let frames = if wanted(&name) { frames } else { 0 };
    // Warm up caches and buffers.
    for _ in 0..frames.div_ceil(10) {
        f();
    }
    let start = Instant::now();
    for _ in 0..frames {
        f();
    }
    Case {
        name,
        frames,
        bytes: frames * frame_len as u64,
        elapsed: start.elapsed(),
    }
}

/// Datagrams of one frame as member 0 of `net` sends it.
fn seal(net: &mut MemNet, hdr: &VnetHdr, frame: &mut [u8]) -> Vec<Vec<u8>> {
    let now = net.now;
    let client = &mut net.members[0].client;
    client.handle_frame(now, hdr, frame, 1500);
    std::iter::from_fn(|| client.poll_transmit().map(|t| t.contents.to_vec())).collect()
}

fn codec_cases(frame_len: usize, max_datagram: usize, offload: bool, frames: u64) -> Vec<Case> {
    let key = NetworkKey::from_bytes([7; 32]);
    let config = ClientConfig {
        max_datagram,
        offload,
        direct: false,
        ..ClientConfig::default()
    };
    // Members 0 (VIRTUAL's side) and 1 (LAN's), sessions up, and member 0
    // knowing that LAN lives behind member 1.
    let mut net = MemNet::joined(&key, 2, config);
    let mut teach = tcp_frame(
        (LAN, Ipv4Addr::new(10, 0, 0, 11)),
        (VIRTUAL, Ipv4Addr::new(10, 0, 0, 10)),
        100,
    );
    net.frame(1, &VnetHdr::NONE, &mut teach);
    net.pump();
    let mut frame = tcp_frame(
        (VIRTUAL, Ipv4Addr::new(10, 0, 0, 10)),
        (LAN, Ipv4Addr::new(10, 0, 0, 11)),
        frame_len,
    );
    let (hdr, kind) = if offload {
        let gso = VnetHdr {
            flags: offload::F_NEEDS_CSUM,
            gso_type: offload::GsoType::TcpV4 as u8,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        (gso, "super-frame")
    } else {
        (VnetHdr::NONE, "plain")
    };
    let tag = format!("{kind} {frame_len} B, {max_datagram} B datagrams");
    let mut cases = Vec::new();

    // The sender: segments (a super-frame) and seals, as an edge does.
    let mut sink = 0usize;
    let now = net.now;
    let sender = &mut net.members[0].client;
    cases.push(run(format!("send   {tag}"), frames, frame_len, || {
        sender.handle_frame(now, &hdr, &mut frame, 1500);
        while let Some(t) = sender.poll_transmit() {
            sink += t.contents.len();
        }
    }));
    black_box(sink);

    // The relay: the sender's frames, sealed beforehand (fresh counters).
    let batch: Vec<Vec<Vec<u8>>> = (0..frames + frames.div_ceil(10))
        .map(|_| seal(&mut net, &hdr, &mut frame))
        .collect();
    let from = member_addr(0);
    let mut next = batch.iter();
    let mut sent = 0usize;
    let relay = &mut net.relay;
    cases.push(run(format!("relay  {tag}"), frames, frame_len, || {
        for d in next.next().expect("enough frames") {
            if let RelayAction::Forward(_, bytes) = relay.handle_datagram(now, from, d) {
                sent += bytes.len();
            }
        }
    }));
    assert!(
        cases.last().is_some_and(|c| c.frames == 0) || sent > 0,
        "the relay forwarded nothing"
    );
    // What the relay forwards, for the receiver (not timed).
    let forwarded: Vec<Vec<Vec<u8>>> = (0..frames + frames.div_ceil(10))
        .map(|_| {
            seal(&mut net, &hdr, &mut frame)
                .iter()
                .filter_map(|d| match net.relay.handle_datagram(now, from, d) {
                    RelayAction::Forward(_, bytes) => Some(bytes.to_vec()),
                    _ => None,
                })
                .collect()
        })
        .collect();

    // The receiver: the member state machine edges and bridges run
    // (authenticate, decrypt, reassemble, put segments back together), fed
    // what the relay forwarded, one frame's datagrams per receive batch.
    let client = &mut net.members[1].client;
    let mut next = forwarded.iter();
    let mut delivered = 0usize;
    cases.push(run(format!("receive {tag}"), frames, frame_len, || {
        let mut deliver = |_: &VnetHdr, f: &[u8]| delivered += f.len();
        for d in next.next().expect("enough frames") {
            match client.handle_datagram(now, RELAY, d, &mut deliver) {
                ClientEvent::Frame | ClientEvent::Nothing => {}
                other => panic!("the member did not take a frame: {other:?}"),
            }
        }
        client.flush(&mut deliver);
    }));
    assert!(
        cases.last().is_some_and(|c| c.frames == 0) || delivered > 0,
        "nothing was delivered"
    );
    cases
}

fn nat_cases(frames: u64) -> Vec<Case> {
    let now = Instant::now();
    let mut nat = Nat::new(NatConfig::new(NIC));
    nat.set_host_addrs(&[Ipv4Addr::new(10, 0, 0, 2)], &[]);
    let virt = (VIRTUAL, Ipv4Addr::new(10, 0, 0, 10));
    let lan = (LAN, Ipv4Addr::new(10, 0, 0, 11));
    // Teach the engine both hosts: the LAN one from the LAN (dropped, the
    // virtual host is not known yet), the virtual one from the overlay.
    let meta = LanMeta {
        pkt_type: PacketType::Host,
        csum_partial: false,
        vlan: None,
    };
    let mut f = tcp_frame(lan, (NIC, virt.1), 64);
    let _ = nat.handle_lan(now, meta, &mut f);
    let mut f = tcp_frame(virt, lan, 64);
    assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
    let mut f = tcp_frame(lan, (NIC, virt.1), 64);
    assert_eq!(nat.handle_lan(now, meta, &mut f), Verdict::Forward);

    let mut cases = Vec::new();
    let to_lan = tcp_frame(virt, lan, 1514);
    let mut buf = to_lan.clone();
    cases.push(run(
        "nat overlay→LAN 1514 B TCP".into(),
        frames,
        1514,
        || {
            buf.copy_from_slice(&to_lan);
            let v = nat.handle_overlay(now, false, black_box(&mut buf));
            debug_assert_eq!(v, Verdict::Forward);
        },
    ));
    let to_overlay = tcp_frame(lan, (NIC, virt.1), 1514);
    let mut buf = to_overlay.clone();
    cases.push(run(
        "nat LAN→overlay 1514 B TCP".into(),
        frames,
        1514,
        || {
            buf.copy_from_slice(&to_overlay);
            let v = nat.handle_lan(now, meta, black_box(&mut buf));
            debug_assert_eq!(v, Verdict::Forward);
        },
    ));
    cases
}

fn main() {
    // `cargo bench` passes `--bench`; `--scale N` runs 1/N of the frames (for
    // a profiler); anything else is a name filter.
    let mut args = std::env::args().skip(1);
    let mut filter = Vec::new();
    let mut scale = 1u64;
    while let Some(a) = args.next() {
        if a == "--scale" {
            scale = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .expect("--scale takes a positive number");
        } else if !a.starts_with("--") {
            filter.push(a);
        }
    }
    let n = |frames: u64| (frames / scale).max(10);
    FILTER.set(filter).expect("set once");
    println!("lanbridge core micro-benchmark (one core, no I/O)");
    let mut cases = Vec::new();
    let max = wire::DEFAULT_MAX_DATAGRAM;
    cases.extend(codec_cases(1514, max, false, n(200_000)));
    cases.extend(codec_cases(65_000, max, true, n(5_000)));
    cases.extend(codec_cases(65_000, 8_192, true, n(5_000)));
    cases.extend(nat_cases(n(1_000_000)));
    for case in cases.iter().filter(|c| c.frames > 0) {
        case.print();
    }
}
