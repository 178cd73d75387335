//! Load generator for a relay (issue 13): many simulated members, each the
//! real member engine ([`Client`], the state machine `lanbridge edge`
//! runs), talking to one running relay over real UDP.
//!
//! Run by `scripts/loadgen.sh`, which builds it, makes the namespaces,
//! starts the relay and reads the numbers; `--help` lists the flags.
//!
//! Shape: one thread, one epoll set, one UDP socket per simulated member
//! (the relay tells members apart by source address and port, so each
//! needs its own; a socket each is the simplest way to get that, and the
//! kernel then demultiplexes: the epoll token is the member's number).
//! Members are split into networks of `--per-network` (each member holds a
//! peer entry per member of its network, so this bounds the generator's
//! own memory; the relay's memory per member doesn't depend on it).
//!
//! Phases, each bounded in time:
//! 1. the active members (`--active-share` of all, in pairs within one
//!    network) register, fetch their member lists and send one broadcast
//!    each, so that every active member learns its partner's MAC;
//! 2. the other members register, `--join-rate` a second;
//! 3. `--settle` seconds of keepalives only;
//! 4. the measuring window (`--seconds`): active members send frames of
//!    `--size` bytes on the wire (through the relay: `direct: false`) at
//!    `--rate` frames a second in all (`max`: as fast as the loop goes),
//!    and with `--flood-rate`, sources without a member send
//!    `UplinkInit`s (`--flood-mac1 bad`: a wrong mac1; `good`: replays of
//!    real initiations, which anyone holding the relay key, or who saw one
//!    on the wire, can send). Data datagrams received in the window are
//!    counted, not opened (the relay's work is the measure, not ours).
//!
//! Printed: the relay's RSS (`VmRSS` of `--relay-pid`), its CPU time
//! (utime + stime from `/proc/PID/stat`) in % of one core over the window,
//! and its forwarding rate from its own counters (`--status-cmd`, a shell
//! command printing the relay's `lanbridge status --json`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use lanbridge::{
    core::{
        client::{Client, ClientConfig},
        offload::VnetHdr,
        proto::{
            codec::{self, uplink_init, Kind},
            session::WallClock,
            Identity, MemberId,
        },
        wire::NetworkKey,
    },
    status::Status,
};

const USAGE: &str = "\
loadgen --relay ADDR:PORT --bind IP --key-file NET.KEY [--key-file ...]
        [--members N] [--per-network M] [--active-share S] [--rate R|max]
        [--size BYTES] [--seconds T] [--join-rate J] [--settle SECS]
        [--flood-rate F] [--flood-mac1 bad|good] [--flood-sources K] [--late-joiners L]
        [--relay-pid PID] [--status-cmd 'SHELL COMMAND']

--members N        simulated members (default 100)
--per-network M    members per network (default 100); needs ceil(N/M) key files
--active-share S   share of members exchanging frames, 0..1 (default 0.1)
--rate R           frames a second in all during the window, or max (default 1000)
--size BYTES       datagram size on the wire (default 1400)
--seconds T        measuring window (default 10)
--join-rate J      registrations a second after the active members (default 500)
--settle SECS      keepalives only before the window (default 5)
--flood-rate F     UplinkInits a second from non-members in the window (default 0)
--flood-mac1       bad: wrong mac1; good: replayed real initiations (default bad)
--flood-sources K  source sockets of the flood (default 256)
--late-joiners L   the last L members join only when the window starts
                   (do members still get in during a flood?)";

#[derive(Debug)]
struct Args {
    relay: SocketAddr,
    bind: IpAddr,
    keys: Vec<PathBuf>,
    members: usize,
    per_network: usize,
    active_share: f64,
    /// None: as fast as the loop goes.
    rate: Option<f64>,
    size: usize,
    seconds: f64,
    join_rate: f64,
    settle: f64,
    flood_rate: f64,
    flood_good_mac1: bool,
    flood_sources: usize,
    late_joiners: usize,
    relay_pid: Option<u32>,
    status_cmd: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        relay: "127.0.0.1:7171".parse().unwrap(),
        bind: "127.0.0.1".parse().unwrap(),
        keys: Vec::new(),
        members: 100,
        per_network: 100,
        active_share: 0.1,
        rate: Some(1000.0),
        size: 1400,
        seconds: 10.0,
        join_rate: 500.0,
        settle: 5.0,
        flood_rate: 0.0,
        flood_good_mac1: false,
        flood_sources: 256,
        late_joiners: 0,
        relay_pid: None,
        status_cmd: None,
    };
    let mut it = std::env::args().skip(1);
    // `cargo bench`/`cargo run` may pass --bench; ignore it.
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_string());
        }
        let v = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {v}: {e}");
        match flag.as_str() {
            "--relay" => a.relay = v.parse().map_err(|e| bad(&e))?,
            "--bind" => a.bind = v.parse().map_err(|e| bad(&e))?,
            "--key-file" => a.keys.push(PathBuf::from(&v)),
            "--members" => a.members = v.parse().map_err(|e| bad(&e))?,
            "--per-network" => a.per_network = v.parse().map_err(|e| bad(&e))?,
            "--active-share" => a.active_share = v.parse().map_err(|e| bad(&e))?,
            "--rate" if v == "max" => a.rate = None,
            "--rate" => a.rate = Some(v.parse().map_err(|e| bad(&e))?),
            "--size" => a.size = v.parse().map_err(|e| bad(&e))?,
            "--seconds" => a.seconds = v.parse().map_err(|e| bad(&e))?,
            "--join-rate" => a.join_rate = v.parse().map_err(|e| bad(&e))?,
            "--settle" => a.settle = v.parse().map_err(|e| bad(&e))?,
            "--flood-rate" => a.flood_rate = v.parse().map_err(|e| bad(&e))?,
            "--flood-mac1" => {
                a.flood_good_mac1 = match v.as_str() {
                    "good" => true,
                    "bad" => false,
                    _ => return Err(bad(&"expected bad or good")),
                }
            }
            "--flood-sources" => a.flood_sources = v.parse().map_err(|e| bad(&e))?,
            "--late-joiners" => a.late_joiners = v.parse().map_err(|e| bad(&e))?,
            "--relay-pid" => a.relay_pid = Some(v.parse().map_err(|e| bad(&e))?),
            "--status-cmd" => a.status_cmd = Some(v),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.per_network == 0 || !(0.0..=1.0).contains(&a.active_share) || a.join_rate <= 0.0 {
        return Err("--per-network > 0, --active-share in 0..1, --join-rate > 0".into());
    }
    let nets = a.members.div_ceil(a.per_network);
    if a.keys.len() < nets {
        return Err(format!(
            "{} members in networks of {} need {nets} --key-file, got {}",
            a.members,
            a.per_network,
            a.keys.len()
        ));
    }
    let min = codec::DATA_OVERHEAD + 42;
    if a.size < min || a.size > 1472 {
        return Err(format!("--size must be {min}..=1472"));
    }
    Ok(a)
}

/// The MAC of member `i`.
fn mac_of(i: usize) -> [u8; 6] {
    let b = (i as u32).to_be_bytes();
    [0x02, 0x4c, b[0], b[1], b[2], b[3]]
}

/// An ARP request from member `i` (a broadcast: peers learn its MAC).
fn arp_from(i: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac_of(i));
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac_of(i));
    f.extend_from_slice(&[10, 77, (i >> 8) as u8, i as u8]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 77, 255, 254]);
    f.resize(60, 0);
    f
}

/// A UDP/IPv4 frame from member `i` to member `j`, `len` bytes long.
fn udp_frame(i: usize, j: usize, len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len - 14 - 20 - 8];
    let mut f = Vec::with_capacity(len);
    PacketBuilder::ethernet2(mac_of(i), mac_of(j))
        .ipv4(
            [10, 77, (i >> 8) as u8, i as u8],
            [10, 77, (j >> 8) as u8, j as u8],
            64,
        )
        .udp(5001, 5001)
        .write(&mut f, &payload)
        .expect("frame builds");
    f
}

/// A minimal epoll set (level-triggered, a `u64` token per fd).
struct Epoll(i32);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall; the fd is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: i32, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` lives across the call; fds are valid.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Tokens of ready fds, waiting at most `timeout_ms`.
    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: `events` is a valid buffer of its length.
        let n = unsafe {
            libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout_ms)
        };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

struct Member {
    client: Client,
    socket: UdpSocket,
    started: bool,
    /// Its partner when active.
    partner: Option<usize>,
}

/// What the generator counted itself.
#[derive(Clone, Copy, Default, Debug)]
struct Counts {
    sent: u64,
    sent_bytes: u64,
    send_errors: u64,
    data_in: u64,
    data_in_bytes: u64,
    other_in: u64,
    cookie_replies: u64,
    uplink_resps: u64,
    flood_sent: u64,
}

struct Gen {
    args: Args,
    members: Vec<Member>,
    flood: Vec<UdpSocket>,
    flood_inits: Vec<Vec<u8>>,
    epoll: Epoll,
    counts: Counts,
    /// In the window: Data datagrams are counted, not opened.
    measuring: bool,
    /// `RECV_BATCH` slots of `SLOT` bytes.
    buf: Vec<u8>,
    send_buf: Vec<u8>,
}

impl Gen {
    /// Sends what member `i` has to send.
    fn transmit(&mut self, i: usize) {
        let m = &mut self.members[i];
        while let Some(t) = m.client.poll_transmit() {
            match m.socket.send_to(t.contents, t.destination) {
                Ok(_) => {
                    self.counts.sent += 1;
                    self.counts.sent_bytes += t.contents.len() as u64;
                }
                Err(_) => self.counts.send_errors += 1,
            }
        }
    }

    /// Sends what member `i` has to send to the relay in `sendmmsg` calls
    /// (datagrams to anywhere else one by one).
    fn transmit_batched(&mut self, i: usize) {
        let relay = self.args.relay;
        let m = &mut self.members[i];
        let mut flat = std::mem::take(&mut self.send_buf);
        let mut ends = Vec::with_capacity(64);
        flat.clear();
        while let Some(t) = m.client.poll_transmit() {
            if t.destination == relay {
                flat.extend_from_slice(t.contents);
                ends.push(flat.len());
            } else if m.socket.send_to(t.contents, t.destination).is_ok() {
                self.counts.sent += 1;
                self.counts.sent_bytes += t.contents.len() as u64;
            } else {
                self.counts.send_errors += 1;
            }
        }
        let mut start = 0;
        let bufs: Vec<&[u8]> = ends
            .iter()
            .map(|&e| {
                let b = &flat[start..e];
                start = e;
                b
            })
            .collect();
        let sent = send_many(m.socket.as_raw_fd(), relay, &bufs);
        self.counts.sent += sent as u64;
        self.counts.sent_bytes += bufs[..sent].iter().map(|b| b.len() as u64).sum::<u64>();
        self.counts.send_errors += (bufs.len() - sent) as u64;
        self.send_buf = flat;
    }

    /// Waits up to `timeout_ms` and handles what arrived (bounded: 256
    /// ready sockets, 64 datagrams each).
    fn poll_io(&mut self, timeout_ms: i32) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        let n = self.epoll.wait(&mut events, timeout_ms);
        let now = Instant::now();
        let mut buf = std::mem::take(&mut self.buf);
        let mut got = Vec::with_capacity(RECV_BATCH);
        for ev in &events[..n] {
            let token = ev.u64 as usize;
            let fd = if token < self.members.len() {
                self.members[token].socket.as_raw_fd()
            } else {
                self.flood[token - self.members.len()].as_raw_fd()
            };
            for _ in 0..4 {
                if recv_many(fd, &mut buf, &mut got) == 0 {
                    break;
                }
                for (k, &(len, from)) in got.iter().enumerate() {
                    let d = &buf[k * SLOT..k * SLOT + len];
                    self.handle(now, token, from, d);
                }
            }
        }
        self.buf = buf;
    }

    /// Handles one datagram received on `token`'s socket.
    fn handle(&mut self, now: Instant, token: usize, from: SocketAddr, d: &[u8]) {
        let len = d.len();
        let kind = codec::peek(d).ok();
        match kind {
            Some(Kind::Data) if self.measuring => {
                self.counts.data_in += 1;
                self.counts.data_in_bytes += len as u64;
                return;
            }
            Some(Kind::CookieReply) => self.counts.cookie_replies += 1,
            Some(Kind::UplinkResp) => self.counts.uplink_resps += 1,
            _ => self.counts.other_in += 1,
        }
        if token >= self.members.len() {
            return;
        }
        let m = &mut self.members[token];
        let mut deliver = |_: &VnetHdr, _: &[u8]| {};
        m.client.handle_datagram(now, from, d, &mut deliver);
        m.client.flush(&mut deliver);
        while m.client.poll_event().is_some() {}
        self.transmit(token);
    }

    /// Runs the timers of started members that are due.
    fn timers(&mut self, now: Instant) {
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if m.started && m.client.poll_timeout() <= now {
                m.client.handle_timeout(now);
                while m.client.poll_event().is_some() {}
                self.transmit(i);
            }
        }
    }

    /// Runs I/O and timers until `done` holds or `limit` passes; true if
    /// `done` held. `done` is checked every 200 ms.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Gen) -> bool) -> bool {
        let end = Instant::now() + limit;
        let mut next_check = Instant::now();
        let mut next_timers = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_check {
                if done(self) {
                    return true;
                }
                next_check = now + Duration::from_millis(200);
            }
            if now >= end {
                return false;
            }
            if now >= next_timers {
                self.timers(now);
                next_timers = now + Duration::from_millis(10);
            }
            self.poll_io(5);
        }
    }

    fn start(&mut self, i: usize) {
        let now = Instant::now();
        let m = &mut self.members[i];
        m.started = true;
        m.client.handle_timeout(now);
        self.transmit(i);
    }
}

/// Datagrams taken per `recvmmsg`.
const RECV_BATCH: usize = 32;
/// Bytes per received datagram (the relay sends at most 1472).
const SLOT: usize = 2048;

/// Sends `bufs` to `to` (IPv4) from `fd` with `sendmmsg`; returns how many
/// were sent.
fn send_many(fd: i32, to: SocketAddr, bufs: &[&[u8]]) -> usize {
    let SocketAddr::V4(v4) = to else {
        return 0;
    };
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    let mut iovs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = &mut sa as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut sent = 0;
    // Bounded: each call sends at least one or the loop ends.
    while sent < msgs.len() {
        // SAFETY: every header points at live iovecs, buffers and `sa`.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs[sent..].as_mut_ptr(),
                (msgs.len() - sent) as libc::c_uint,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        sent += n as usize;
    }
    sent
}

/// Receives up to [`RECV_BATCH`] datagrams from `fd` (non-blocking) into
/// `buf`'s slots; `got` gets (length, source) of each. Returns how many.
fn recv_many(fd: i32, buf: &mut [u8], got: &mut Vec<(usize, SocketAddr)>) -> usize {
    got.clear();
    // SAFETY: plain data; all-zero is valid.
    let mut addrs: [libc::sockaddr_in; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: Vec<libc::iovec> = buf
        .chunks_exact_mut(SLOT)
        .take(RECV_BATCH)
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: SLOT,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(addrs.iter_mut())
        .map(|(iov, a)| {
            // SAFETY: plain data; all-zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = a as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: every header points at live slots and addresses.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n <= 0 {
        return 0;
    }
    for (m, a) in msgs.iter().zip(addrs.iter()).take(n as usize) {
        let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        let from = SocketAddr::from((ip, u16::from_be(a.sin_port)));
        got.push((m.msg_len as usize, from));
    }
    n as usize
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn relay_status(cmd: &Option<String>) -> Option<Status> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd.as_ref()?)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn ticks_per_sec() -> f64 {
    // SAFETY: plain libc query.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let nets = args.members.div_ceil(args.per_network);
    let keys: Vec<NetworkKey> = args.keys[..nets]
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            NetworkKey::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    let epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let config = ClientConfig {
        direct: false,
        ..ClientConfig::default()
    };
    let t0 = Instant::now();
    let clock = WallClock::system(t0);
    let bind = SocketAddr::new(args.bind, 0);
    let open = |token: u64| -> Result<UdpSocket, String> {
        let s = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e} (ulimit -n?)"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        epoll
            .add(s.as_raw_fd(), token)
            .map_err(|e| format!("epoll_ctl: {e}"))?;
        Ok(s)
    };
    // Active members: pairs (2k, 2k+1) of the same network; member i is in
    // network i / per_network, so pairs are taken from the start of each
    // network.
    let per_net_active = |net: usize| -> usize {
        let size = args.per_network.min(args.members - net * args.per_network);
        ((size as f64 * args.active_share).round() as usize / 2) * 2
    };
    let mut members = Vec::with_capacity(args.members);
    for i in 0..args.members {
        let network = i / args.per_network;
        let start = network * args.per_network;
        let k = i - start;
        let partner = (k < per_net_active(network)).then_some(start + (k ^ 1));
        members.push(Member {
            client: Client::new(
                config.clone(),
                &keys[network],
                Identity::generate(),
                args.relay,
                t0,
                clock,
            ),
            socket: open(i as u64)?,

            started: false,
            partner,
        });
    }
    // The flood: initiations made by members that never answer.
    let mut flood = Vec::new();
    let mut flood_inits = Vec::new();
    if args.flood_rate > 0.0 {
        let key = match keys.first() {
            Some(k) => k.clone(),
            None => {
                let p = args.keys.first().ok_or("the flood needs a --key-file")?;
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                NetworkKey::parse(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
        };
        for _ in 0..64 {
            let mut c = Client::new(
                config.clone(),
                &key,
                Identity::generate(),
                args.relay,
                t0,
                clock,
            );
            c.handle_timeout(Instant::now());
            while let Some(t) = c.poll_transmit() {
                if codec::peek(t.contents) == Ok(Kind::UplinkInit) {
                    let mut d = t.contents.to_vec();
                    if !args.flood_good_mac1 {
                        d[uplink_init::MAC1.start] ^= 0x01;
                    }
                    flood_inits.push(d);
                }
            }
        }
        for k in 0..args.flood_sources.max(1) {
            flood.push(open((args.members + k) as u64)?);
        }
    }
    let active: Vec<usize> = (0..args.members)
        .filter(|i| members[*i].partner.is_some())
        .collect();
    println!(
        "loadgen: {} members in {nets} networks of up to {}, {} active ({} pairs), \
         setup {:.1} s",
        args.members,
        args.per_network,
        active.len(),
        active.len() / 2,
        t0.elapsed().as_secs_f64()
    );
    let mut g = Gen {
        args,
        members,
        flood,
        flood_inits,
        epoll,
        counts: Counts::default(),
        measuring: false,
        buf: vec![0u8; RECV_BATCH * SLOT],
        send_buf: Vec::new(),
    };

    // Phase 1: active members join, find each other, learn MACs.
    let t = Instant::now();
    for &i in &active {
        g.start(i);
    }
    let limit = Duration::from_secs(30 + active.len() as u64 / 50);
    let ok = g.run_until(limit, |g| {
        active.iter().all(|&i| {
            let m = &g.members[i];
            let partner = g.members[m.partner.unwrap_or(i)].client.identity().id();
            m.client.is_registered()
                && m.client
                    .peers(Instant::now())
                    .iter()
                    .any(|p| p.id == partner)
        })
    });
    if !ok {
        return Err("active members did not all join and see their partners".into());
    }
    for &i in &active {
        let mut arp = arp_from(i);
        let now = Instant::now();
        g.members[i]
            .client
            .handle_frame(now, &VnetHdr::NONE, &mut arp, 1500);
        g.transmit(i);
    }
    let ok = g.run_until(limit, |g| {
        active.iter().all(|&i| {
            let m = &g.members[i];
            let partner: MemberId = g.members[m.partner.unwrap_or(i)].client.identity().id();
            m.client
                .peers(Instant::now())
                .iter()
                .any(|p| p.id == partner && p.macs > 0)
        })
    });
    if !ok {
        return Err("active members did not all learn their partners' MACs".into());
    }
    println!(
        "phase 1: {} active members joined and paired in {:.1} s",
        active.len(),
        t.elapsed().as_secs_f64()
    );

    // Phase 2: the others join, join_rate a second.
    let t = Instant::now();
    let rest: Vec<usize> = (0..g.members.len())
        .filter(|i| g.members[*i].partner.is_none())
        .collect();
    // The last `late_joiners` wait for the window.
    let late: Vec<usize> = rest[rest.len().saturating_sub(g.args.late_joiners)..].to_vec();
    let rest = rest[..rest.len() - late.len()].to_vec();
    let mut next = 0;
    let limit = Duration::from_secs_f64(60.0 + rest.len() as f64 / g.args.join_rate * 2.0);
    let end = Instant::now() + limit;
    let mut last_report = Instant::now();
    loop {
        let now = Instant::now();
        let due = ((now - t).as_secs_f64() * g.args.join_rate) as usize;
        while next < rest.len().min(due) {
            g.start(rest[next]);
            next += 1;
        }
        if now >= last_report + Duration::from_secs(1) {
            last_report = now;
            let registered = g
                .members
                .iter()
                .filter(|m| m.client.is_registered())
                .count();
            if (now - t).as_secs() % 5 == 0 {
                let mut drops: HashMap<&str, u64> = HashMap::new();
                for m in &g.members {
                    for (r, n) in m.client.stats().drops.nonzero() {
                        *drops.entry(r.as_str()).or_default() += n;
                    }
                }
                println!(
                    "  {:.0} s: started {next}, registered {registered}; received {} cookie \
                     replies, {} uplink responses, {} other; member drops {drops:?}",
                    (now - t).as_secs_f64(),
                    g.counts.cookie_replies,
                    g.counts.uplink_resps,
                    g.counts.other_in
                );
            }
            if next == rest.len() && registered == g.members.len() - late.len() {
                break;
            }
            if now >= end {
                return Err(format!(
                    "only {registered} of {} members registered after {:.0} s",
                    g.members.len(),
                    limit.as_secs_f64()
                ));
            }
        }
        g.run_until(Duration::from_millis(20), |_| false);
    }
    println!(
        "phase 2: {} more members joined in {:.1} s",
        rest.len(),
        t.elapsed().as_secs_f64()
    );

    // Phase 3: settle.
    g.run_until(Duration::from_secs_f64(g.args.settle), |_| false);

    // Phase 4: the window.
    window(&mut g, &active, &late)
}

fn window(g: &mut Gen, active: &[usize], late: &[usize]) -> Result<(), String> {
    let pid = g.args.relay_pid;
    let st0 = relay_status(&g.args.status_cmd);
    let rss0 = pid.and_then(rss_kib);
    let cpu0 = pid.and_then(cpu_ticks);
    let c0 = g.counts;
    let t0 = Instant::now();
    g.measuring = true;
    let seconds = Duration::from_secs_f64(g.args.seconds);
    let frame_len = g.args.size - codec::DATA_OVERHEAD;
    let mut frames: HashMap<usize, Vec<u8>> = HashMap::new();
    for &i in active {
        let partner = g.members[i].partner.unwrap_or(i);
        frames.insert(i, udp_frame(i, partner, frame_len));
    }
    let (mut frames_sent, mut rr, mut flood_rr) = (0u64, 0usize, 0usize);
    let mut next_timers = t0;
    for &i in late {
        g.start(i);
    }
    loop {
        let now = Instant::now();
        let elapsed = now - t0;
        if elapsed >= seconds {
            break;
        }
        if now >= next_timers {
            g.timers(now);
            next_timers = now + Duration::from_millis(10);
        }
        // Frames due by the rate (at most 64 per turn, so I/O keeps up).
        if !active.is_empty() {
            let due = match g.args.rate {
                Some(r) => ((elapsed.as_secs_f64() * r) as u64).saturating_sub(frames_sent),
                None => 64,
            };
            // A burst from one member leaves in one sendmmsg.
            let burst = due.min(32);
            if burst > 0 {
                let i = active[rr % active.len()];
                rr += 1;
                for _ in 0..burst {
                    let mut f = frames[&i].clone();
                    g.members[i]
                        .client
                        .handle_frame(now, &VnetHdr::NONE, &mut f, 1500);
                    frames_sent += 1;
                }
                g.transmit_batched(i);
            }
        }
        if g.args.flood_rate > 0.0 && !g.flood_inits.is_empty() {
            let due = ((elapsed.as_secs_f64() * g.args.flood_rate) as u64)
                .saturating_sub(g.counts.flood_sent - c0.flood_sent);
            for _ in 0..due.min(256) {
                let s = &g.flood[flood_rr % g.flood.len()];
                let d = &g.flood_inits[flood_rr % g.flood_inits.len()];
                flood_rr += 1;
                match s.send_to(d, g.args.relay) {
                    Ok(_) => g.counts.flood_sent += 1,
                    Err(_) => g.counts.send_errors += 1,
                }
            }
        }
        let paced_idle = g.args.rate.is_some() || active.is_empty();
        g.poll_io(if paced_idle { 1 } else { 0 });
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = pid.and_then(cpu_ticks);
    let rss1 = pid.and_then(rss_kib);
    let hwm = pid.and_then(|p| proc_status_kib(p, "VmHWM:"));
    g.measuring = false;
    let st1 = relay_status(&g.args.status_cmd);
    let c1 = g.counts;
    let registered = g
        .members
        .iter()
        .filter(|m| m.client.is_registered())
        .count();
    let late_in = late
        .iter()
        .filter(|i| g.members[**i].client.is_registered())
        .count();

    println!("--- window: {secs:.1} s");
    if !late.is_empty() {
        println!(
            "late joiners: {late_in} of {} registered within the window",
            late.len()
        );
    }
    println!(
        "members: {} registered of {}; {} active, frames of {} B ({} B datagrams), rate {}",
        registered,
        g.members.len(),
        active.len(),
        frame_len,
        g.args.size,
        g.args.rate.map_or("max".to_string(), |r| format!("{r}/s")),
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        println!(
            "relay RSS: {:.1} MiB at start, {:.1} MiB at end; peak since it started \
             (VmHWM) {:.1} MiB",
            a as f64 / 1024.0,
            b as f64 / 1024.0,
            hwm.unwrap_or(0) as f64 / 1024.0
        );
    }
    let cpu_pct = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a) as f64 / ticks_per_sec() / secs * 100.0),
        _ => None,
    };
    if let Some(p) = cpu_pct {
        println!("relay CPU: {p:.1} % of one core");
    }
    let d = |f: fn(&Counts) -> u64| (f(&c1) - f(&c0)) as f64 / secs;
    println!(
        "generator: sent {:.0} datagrams/s ({:.1} Mbit/s), {} send errors; received Data \
         {:.0}/s ({:.1} Mbit/s), other {:.0}/s",
        d(|c| c.sent),
        d(|c| c.sent_bytes) * 8.0 / 1e6,
        c1.send_errors - c0.send_errors,
        d(|c| c.data_in),
        d(|c| c.data_in_bytes) * 8.0 / 1e6,
        d(|c| c.other_in),
    );
    if g.args.flood_rate > 0.0 {
        println!(
            "flood: sent {:.0} UplinkInits/s ({} mac1), got {:.0} CookieReplies/s and {:.0} \
             UplinkResps/s",
            d(|c| c.flood_sent),
            if g.args.flood_good_mac1 {
                "good"
            } else {
                "bad"
            },
            d(|c| c.cookie_replies),
            d(|c| c.uplink_resps),
        );
    }
    if let (Some(a), Some(b)) = (
        st0.as_ref().and_then(|s| s.relay.as_ref()),
        st1.as_ref().and_then(|s| s.relay.as_ref()),
    ) {
        let rx = (b.datagrams_received - a.datagrams_received) as f64 / secs;
        let tx = (b.datagrams_sent - a.datagrams_sent) as f64 / secs;
        println!(
            "relay counters: received {rx:.0} datagrams/s, sent {tx:.0} datagrams/s; \
             handshakes +{}, registrations +{}, timeouts +{}, cookies sent +{}, cookie mode {} at end",
            b.handshakes - a.handshakes,
            b.registrations - a.registrations,
            b.timeouts - a.timeouts,
            b.cookies_sent - a.cookies_sent,
            if b.cookie_mode { "ON" } else { "off" },
        );
        if let (Some(sa), Some(sb)) = (&st0, &st1) {
            let drops: Vec<String> = sb
                .drops
                .iter()
                .filter_map(|(k, v)| {
                    let before = sa.drops.get(k).copied().unwrap_or(0);
                    (*v > before).then(|| format!("{k} +{}", v - before))
                })
                .collect();
            println!(
                "relay drops in window: {}",
                if drops.is_empty() {
                    "none".to_string()
                } else {
                    drops.join(", ")
                }
            );
        }
        let per_core = cpu_pct
            .filter(|p| *p > 1.0)
            .map_or(String::new(), |p| format!(" {:.0}", tx / (p / 100.0)));
        println!(
            "RESULT members={} rss_mib={:.1} relay_cpu_pct={:.1} fwd_dgrams_per_s={tx:.0} \
             data_in_mbit_per_s={:.1} size={} dgrams_per_core_s={}",
            registered,
            rss1.unwrap_or(0) as f64 / 1024.0,
            cpu_pct.unwrap_or(0.0),
            d(|c| c.data_in_bytes) * 8.0 / 1e6,
            g.args.size,
            per_core.trim(),
        );
    }
    Ok(())
}
