//! A TAP opened with vnet headers (`Tap::open(name, true)`), against the real
//! kernel: the test plays the far end of a TCP connection that a socket in
//! the namespace opens through the TAP, reads the TSO super-frames the kernel
//! sends, and writes a TSO super-frame back that the socket must receive.
//! Also: USO out of a vnet TAP, a plain TAP refusing super-frames, and
//! `PacketSocket::try_send_offload` putting a super-frame on a veth.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use lanbridge::{
    core::{
        frame::checksum,
        offload::{GsoType, VnetHdr, F_NEEDS_CSUM},
    },
    io::tap::Tap,
};

use crate::harness::Lab;

const TAP: &str = "vtap0";
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// The far end, played by the test; reached through a static neighbour entry.
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0x77, 1, 2];
const PEER_PORT: u16 = 5555;
const MSS: u16 = 1460;
const PEER_ISN: u32 = 1000;
/// Bytes the peer sends in one super-frame: ten segments.
const DOWN: usize = 10 * MSS as usize;
/// Bytes the socket writes towards the peer.
const UP: usize = 30_000;

/// Runs `ip args` (from a thread inside the namespace, so inside it too).
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What the kernel sent out of the TAP.
#[derive(Debug, Default)]
struct Seen {
    /// Largest TCP frame from the socket, with its vnet header.
    largest: Option<(VnetHdr, usize)>,
    /// Payload bytes of the socket's TCP frames.
    payload: usize,
    /// (frame length, gso type, gso_size) of every data frame.
    frames: Vec<(usize, u8, u16)>,
}

/// A TCP frame from the socket (LOCAL) to the peer, if `frame` is one:
/// (source port, sequence number, SYN, payload length).
fn tcp_to_peer(frame: &[u8]) -> Option<(u16, u32, bool, usize)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    if ip.header().destination_addr() != PEER {
        return None;
    }
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        return None;
    };
    if tcp.destination_port() != PEER_PORT {
        return None;
    }
    Some((
        tcp.source_port(),
        tcp.sequence_number(),
        tcp.syn(),
        tcp.payload().len(),
    ))
}

/// The peer's TCP frame to the socket: Ethernet, IPv4, TCP (with `options`),
/// complete checksums.
fn peer_frame(
    tap_mac: [u8; 6],
    port: u16,
    seq: u32,
    ack: u32,
    syn: bool,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let b = PacketBuilder::ethernet2(PEER_MAC, tap_mac)
        .ipv4(PEER.octets(), LOCAL.octets(), 64)
        .tcp(PEER_PORT, port, seq, 65535)
        .ack(ack);
    let b = if syn {
        b.syn()
            .options(&[TcpOptionElement::MaximumSegmentSize(MSS)])
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
    } else {
        b.psh()
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)?;
    Ok(out)
}

/// The TAP's MAC (SIOCGIFHWADDR through `ip -j link`, read in the namespace).
fn tap_mac() -> Result<[u8; 6]> {
    let out = Command::new("ip")
        .args(["-j", "link", "show", TAP])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let s = v[0]["address"].as_str().context("no address")?;
    let mut mac = [0u8; 6];
    for (m, part) in mac.iter_mut().zip(s.split(':')) {
        *m = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

/// One frame from the TAP, or `None` after `wait` without one.
async fn recv(tap: &Tap, buf: &mut [u8], wait: Duration) -> Result<Option<(VnetHdr, usize)>> {
    match tokio::time::timeout(wait, tap.recv(buf)).await {
        Ok(r) => Ok(Some(r.context("TAP recv")?)),
        Err(_) => Ok(None),
    }
}

/// Makes `frame` (Ethernet, a 20-byte IPv4 header, a 20-byte TCP header,
/// payload from `src` to `dst`) a TSO super-frame as the kernel hands one
/// over: the TCP checksum field holds the partial pseudo-header sum, and
/// the returned vnet header says TCPv4 GSO with segments of MSS bytes.
fn as_tso_v4(frame: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> VnetHdr {
    let tcp_len = (frame.len() - 14 - 20) as u16;
    let pseudo = checksum::fold(checksum::pseudo_header_v4(src, dst, 6, tcp_len));
    frame[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&pseudo.to_be_bytes());
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GsoType::TcpV4 as u8,
        hdr_len: 14 + 20 + 20,
        gso_size: MSS,
        csum_start: 14 + 20,
        csum_offset: 16,
    }
}

/// Brings the TAP up with address LOCAL and a permanent neighbour entry for
/// PEER, so the kernel sends to PEER without asking.
fn up_with_peer() -> Result<()> {
    ip(&["link", "set", TAP, "up"])?;
    ip(&["addr", "add", &format!("{LOCAL}/24"), "dev", TAP])?;
    let peer_mac = PEER_MAC.map(|b| format!("{b:02x}")).join(":");
    ip(&[
        "neigh",
        "add",
        &PEER.to_string(),
        "lladdr",
        &peer_mac,
        "dev",
        TAP,
        "nud",
        "permanent",
    ])?;
    Ok(())
}

/// The whole scenario, on a thread inside the namespace.
async fn scenario() -> Result<(Seen, usize)> {
    let tap = Tap::open(TAP, true)?;
    ensure!(tap.offload(), "a TAP opened with offload reports none");
    up_with_peer()?;
    let mac = tap_mac()?;

    // The socket, on its own thread (blocking I/O; the thread inherits the
    // namespace): connect, write UP bytes, then read what the peer sends.
    let client = std::thread::spawn(move || -> Result<Vec<u8>> {
        let to = SocketAddr::from((PEER, PEER_PORT));
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(&vec![0x55; UP])?;
        let mut got = vec![0u8; DOWN];
        s.read_exact(&mut got)?;
        Ok(got)
    });

    let mut buf = vec![0u8; 65536 + 64];

    // The SYN.
    let (port, isn) = loop {
        let (hdr, n) = recv(&tap, &mut buf, Duration::from_secs(5))
            .await?
            .context("nothing from the TAP for 5 s")?;
        if let Some((port, seq, true, _)) = tcp_to_peer(&buf[..n]) {
            eprintln!("SYN: {n} bytes, {hdr:?}");
            break (port, seq);
        }
    };
    let synack = peer_frame(mac, port, PEER_ISN, isn.wrapping_add(1), true, &[])?;
    tap.try_send(&synack).context("write SYN-ACK")?;

    // A buffer too small for a data frame: the kernel cuts the frame without
    // a word, and recv reports it as InvalidData (TCP sends it again).
    let mut small = [0u8; 1000];
    loop {
        match recv(&tap, &mut small, Duration::from_secs(5)).await {
            Ok(Some((_, n))) => {
                let data = tcp_to_peer(&small[..n]).is_some_and(|t| t.3 > 0);
                ensure!(!data, "a {n}-byte data frame fit a 1000-byte buffer");
            }
            Ok(None) => bail!("no data frame from the socket"),
            Err(e) => {
                let io = e
                    .downcast_ref::<std::io::Error>()
                    .context("not an io error")?;
                ensure!(io.kind() == std::io::ErrorKind::InvalidData, "{e:#}");
                eprintln!("small buffer: {io}");
                break;
            }
        }
    }

    // The data, until UP bytes came or the flight stops.
    let mut seen = Seen::default();
    while seen.payload < UP {
        let Some((hdr, n)) = recv(&tap, &mut buf, Duration::from_millis(1500)).await? else {
            break;
        };
        let Some((_, _, _, len)) = tcp_to_peer(&buf[..n]) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        seen.payload += len;
        seen.frames.push((n, hdr.gso_type, hdr.gso_size));
        if seen.largest.is_none_or(|(_, m)| n > m) {
            seen.largest = Some((hdr, n));
        }
    }

    // A super-frame from the peer: DOWN bytes in one frame, TSO over IPv4,
    // with a partial checksum (the pseudo-header sum, not complemented).
    let payload: Vec<u8> = (0..DOWN).map(|i| (i % 251) as u8).collect();
    let mut frame = peer_frame(
        mac,
        port,
        PEER_ISN + 1,
        isn.wrapping_add(1),
        false,
        &payload,
    )?;
    let hdr = as_tso_v4(&mut frame, PEER, LOCAL);
    let n = tap
        .try_send_offload(&hdr, &frame)
        .context("write the super-frame")?;
    ensure!(n == frame.len(), "wrote {n} of {} bytes", frame.len());

    let got = tokio::task::spawn_blocking(move || client.join())
        .await?
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
        .context("client")?;
    ensure!(
        got == payload,
        "the socket read other bytes than the super-frame's"
    );
    Ok((seen, frame.len()))
}

#[test]
fn vnet_tap_passes_tso_super_frames_both_ways() {
    let Some(lab) = Lab::new("vnet_tap") else {
        return;
    };
    let ns = lab.ns("t");
    let (seen, sent) = ns
        .enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(scenario())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "kernel -> TAP data frames (len, gso_type, gso_size): {:?}",
        seen.frames
    );
    eprintln!("TAP -> kernel: one {sent}-byte TCPv4 super-frame, accepted");
    let (hdr, n) = seen.largest.expect("no data frame from the socket");
    assert!(
        n > 1514,
        "largest frame {n} bytes: no super-frame ({hdr:?})"
    );
    assert_eq!(hdr.gso(), Ok(GsoType::TcpV4), "{hdr:?}");
    assert!(hdr.needs_csum(), "{hdr:?}");
    assert_eq!(hdr.gso_size, MSS, "{hdr:?}");
}

#[test]
fn plain_tap_refuses_super_frames() {
    let Some(lab) = Lab::new("plain_tap") else {
        return;
    };
    let ns = lab.ns("t");
    ns.enter(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let tap = Tap::open(TAP, false)?;
                ensure!(!tap.offload());
                let hdr = VnetHdr {
                    gso_type: GsoType::TcpV4 as u8,
                    gso_size: MSS,
                    ..VnetHdr::NONE
                };
                let e = tap.try_send_offload(&hdr, &[0; 60]).unwrap_err();
                ensure!(e.kind() == std::io::ErrorKind::Unsupported, "{e}");
                Ok(())
            })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// UDP with `UDP_SEGMENT` from a socket in the namespace: with USO on the
/// TAP (Linux 6.2 and later) the kernel hands over one UDP_L4 super-frame;
/// without, the datagrams one by one. Either way every byte arrives.
async fn udp_gso() -> Result<Vec<(usize, VnetHdr)>> {
    let tap = Tap::open(TAP, true)?;
    up_with_peer()?;
    let sock = std::net::UdpSocket::bind((LOCAL, 0))?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::UdpGsoSegment, &1000)?;
    sock.send_to(&[0x33; 10_000], (PEER, PEER_PORT))?;

    let mut buf = vec![0u8; 65536 + 64];
    let mut frames = Vec::new();
    let mut payload = 0;
    while payload < 10_000 {
        let (hdr, n) = recv(&tap, &mut buf, Duration::from_secs(5))
            .await?
            .context("the datagrams did not all come out of the TAP")?;
        let Ok(p) = SlicedPacket::from_ethernet(&buf[..n]) else {
            continue;
        };
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            continue;
        };
        if udp.destination_port() != PEER_PORT {
            continue;
        }
        // A UDP_L4 super-frame's UDP length covers only the first segment.
        payload += n - 14 - 20 - 8;
        frames.push((n, hdr));
    }
    ensure!(payload == 10_000, "{payload} UDP payload bytes, not 10000");
    Ok(frames)
}

#[test]
fn vnet_tap_hands_over_udp_gso() {
    let Some(lab) = Lab::new("vnet_tap_udp") else {
        return;
    };
    let ns = lab.ns("t");
    let frames = ns
        .enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(udp_gso())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("kernel -> TAP UDP frames: {frames:?}");
    for (n, hdr) in &frames {
        if *n > 1514 {
            assert_eq!(hdr.gso(), Ok(GsoType::UdpL4), "{hdr:?}");
            assert_eq!(hdr.gso_size, 1000, "{hdr:?}");
            assert!(hdr.needs_csum(), "{hdr:?}");
        }
    }
}

/// `PacketSocket::try_send_offload` over a veth pair: a 14600-byte TCPv4
/// super-frame (far above the 1500 MTU) with a GSO header and a partial
/// checksum goes out of `a`; a packet socket on `b` sees all its payload,
/// whole or in segments.
#[test]
fn packet_socket_sends_a_tso_super_frame() {
    use lanbridge::io::packet_socket::PacketSocket;

    let Some(lab) = Lab::new("pkt_gso") else {
        return;
    };
    let a = lab.ns("a");
    let b = lab.ns("b");
    let (la, lb) = lab
        .veth(
            &a,
            "ve-a",
            Some("10.77.2.1/24"),
            &b,
            "ve-b",
            Some("10.77.2.2/24"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let src = Ipv4Addr::new(10, 77, 2, 1);
    let dst = Ipv4Addr::new(10, 77, 2, 2);
    let payload: Vec<u8> = (0..DOWN).map(|i| (i % 251) as u8).collect();
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(la.mac.0, lb.mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(40000, PEER_PORT, 1, 65535)
        .ack(1)
        .write(&mut frame, &payload)
        .unwrap();
    let hdr = as_tso_v4(&mut frame, src, dst);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let done = std::sync::atomic::AtomicBool::new(false);
    let done = &done;
    let seen = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            b.enter(|| {
                runtime()?.block_on(async {
                    let sock = PacketSocket::open(&lb.name, lb.index)?;
                    ready_tx.send(()).ok();
                    let mut buf = vec![0u8; VnetHdr::LEN + 65536 + 4096];
                    let mut seen = Vec::new();
                    // Payload bytes by TCP sequence number: the sender
                    // sends again until all arrived (a veth just brought
                    // up may drop the first), so count each segment once.
                    let mut segments = std::collections::BTreeMap::new();
                    let mut got = 0;
                    while got < DOWN {
                        let r = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
                            .await
                            .context("the payload did not all arrive on b")??;
                        let Some(c) = r else { continue };
                        let hdr = VnetHdr::parse(&buf[..c.len])?;
                        let frame = &buf[VnetHdr::LEN..c.len];
                        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                            continue;
                        };
                        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                            continue;
                        };
                        if tcp.destination_port() != PEER_PORT {
                            continue;
                        }
                        segments.insert(tcp.sequence_number(), tcp.payload().len());
                        got = segments.values().sum();
                        seen.push((frame.len(), hdr));
                    }
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    ensure!(got == DOWN, "{got} payload bytes, not {DOWN}");
                    Ok(seen)
                })
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("b's packet socket did not open");
        a.enter(|| {
            runtime()?.block_on(async {
                let sock = PacketSocket::open(&la.name, la.index)?;
                // Again every half second until b has it all (at most 10
                // times).
                for _ in 0..10 {
                    sock.try_send_offload(&hdr, &frame)
                        .context("send the super-frame")?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                }
                // A frame that big without a GSO header is refused.
                let mut plain = VnetHdr::NONE.to_bytes().to_vec();
                plain.extend_from_slice(&frame);
                let e = sock.try_send(&plain).unwrap_err();
                eprintln!("the same frame without GSO: {e}");
                ensure!(e.raw_os_error() == Some(libc::EMSGSIZE), "{e}");
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        rx.join().unwrap()
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("b received (frame len, vnet header): {seen:?}");
}
