//! Writes the seeds of the protocol version 2 fuzz targets (`datagram`,
//! `client`, `relay`, `handshake`) into `fuzz/seeds/TARGET/gen-*`: inputs in
//! each target's format (its doc comment), among them real datagrams of
//! every kind captured from the in-memory network of fuzz/common/mod.rs.
//! The targets restart the same deterministic random source for every
//! input and build their worlds with the same functions as here
//! (`common::client_world` ...), so what is captured here authenticates
//! there: a seed can hand the relay's genuine answer to a member's
//! initiation, or a member's genuine initiation to the relay.
//!
//! Run from the repository's top level, with the RUSTFLAGS of fuzz builds
//! (`scripts/fuzz.sh --seeds` does this):
//! `RUSTFLAGS='--cfg fuzzing --cfg getrandom_backend="custom"' cargo +nightly run --release --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds`

#[path = "../common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::World;
use lanbridge::core::{
    client::ClientConfig,
    frame::tcp::flags,
    offload::VnetHdr,
    proto::codec::{self, data, routed, Control, Kind},
    relay::RelayConfig,
};

/// An input under construction.
#[derive(Default, Clone)]
struct Seed(Vec<u8>);

impl Seed {
    fn new(first: u8) -> Seed {
        Seed(vec![first])
    }
    fn u8(mut self, b: u8) -> Seed {
        self.0.push(b);
        self
    }
    fn u16(mut self, v: u16) -> Seed {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(self, v: u32) -> Seed {
        self.u16(v as u16).u16((v >> 16) as u16)
    }
    fn bytes(mut self, b: &[u8]) -> Seed {
        self.0.extend_from_slice(b);
        self
    }
    fn blob(self, b: &[u8]) -> Seed {
        self.u16(b.len() as u16).bytes(b)
    }
}

struct Out {
    dir: PathBuf,
    written: usize,
}

impl Out {
    fn new(root: &Path, target: &str) -> Out {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("create the seed directory");
        // Seeds of an earlier run go: names may have changed.
        for e in fs::read_dir(&dir).expect("read the seed directory").flatten() {
            if e.file_name().to_string_lossy().starts_with("gen-") {
                fs::remove_file(e.path()).expect("remove an old seed");
            }
        }
        Out { dir, written: 0 }
    }

    fn write(&mut self, name: &str, seed: &Seed) {
        fs::write(self.dir.join(format!("gen-{name}")), &seed.0).expect("write a seed");
        self.written += 1;
    }
}

fn kind_name(d: &[u8]) -> &'static str {
    match codec::peek(d) {
        Ok(Kind::UplinkInit) => "uplink-init",
        Ok(Kind::UplinkResp) => "uplink-resp",
        Ok(Kind::CookieReply) => "cookie-reply",
        Ok(Kind::Control) => "control",
        Ok(Kind::PeerInit) => "peer-init",
        Ok(Kind::PeerResp) => "peer-resp",
        Ok(Kind::Data) => "data",
        Ok(Kind::Rejoin) => "rejoin",
        Err(_) => "bad",
    }
}

/// Datagrams of every kind from a few in-memory runs, up to 3 of each.
fn captured() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut all: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut keep = |w: &mut World| {
        for (_, d) in w.capture.take().unwrap_or_default() {
            let v = all.entry(kind_name(&d)).or_default();
            if v.len() < 3 && !v.contains(&d) {
                v.push(d);
            }
        }
        w.capture = Some(Vec::new());
    };

    // Two members joining, shaking hands, frames whole and cut, a rekey.
    common::reset_rng();
    let mut w = World::new(RelayConfig::default());
    w.capture = Some(Vec::new());
    let config = ClientConfig {
        max_datagram: 300,
        ..ClientConfig::default()
    };
    for _ in 0..2 {
        let i = w.add_member(0, config.clone());
        w.join(i);
    }
    w.advance(Duration::from_secs(5));
    w.greet(0);
    for len in [60, 1000] {
        let mut f = common::eth_frame(common::member_mac(0), common::member_mac(1), 0x88b5, &vec![7; len]);
        w.member_frame(1, &VnetHdr::NONE, &mut f, 1500);
        w.pump();
    }
    w.advance(Duration::from_secs(125));
    keep(&mut w);

    // Under load: a cookie, then the initiation again with mac2.
    common::reset_rng();
    let relay = RelayConfig {
        handshakes_per_sec: 0,
        ..RelayConfig::default()
    };
    let mut w = World::new(relay);
    w.capture = Some(Vec::new());
    let i = w.add_member(0, ClientConfig::default());
    w.join(i);
    w.advance(Duration::from_secs(2));
    keep(&mut w);

    // The relay restarted: Rejoin.
    w.relay = lanbridge::core::relay::Relay::new(RelayConfig::default(), vec![common::relay_key(0)]);
    w.advance(Duration::from_secs(6));
    keep(&mut w);
    all
}

fn datagram(root: &Path) -> usize {
    let mut out = Out::new(root, "datagram");
    for (kind, ds) in captured() {
        for (n, d) in ds.iter().enumerate() {
            out.write(&format!("raw-{kind}-{n}"), &Seed::new(0).bytes(d));
        }
    }
    // The relay's answer to the initiation the client of `raw` sends.
    let now = Instant::now();
    let (mut relay, _, init) = common::stranger_engines(now);
    out.write("raw-own-uplink-init", &Seed::new(0).bytes(&init));
    if let common::Action::Reply(r) = common::owned(relay.handle_datagram(now, common::addrs()[0], &init)) {
        out.write("raw-answer-to-own-init", &Seed::new(0).bytes(&r));
        // The target's client takes it.
        let (_, mut client, _) = common::stranger_engines(now);
        let event = client.handle_datagram(now, common::relay_addr(), &r, &mut |_| {}, &mut |_, _| {});
        assert_eq!(event, lanbridge::core::client::ClientEvent::Registered);
    }
    // Frames to cut: ids, rooms, sizes.
    let frame = |len: usize| -> Vec<u8> {
        let mut f = common::eth_frame([0xff; 6], common::member_mac(1), 0x0800, &[]);
        f.extend((0..len.saturating_sub(14)).map(|i| i as u8));
        f
    };
    for (name, room, len) in [
        ("cut-one", 5, 60),
        ("cut-three", 0x17 | 4 << 3, 3000),
        ("cut-too-short", 3, 10),
        ("cut-too-many", 1, 600),
        ("cut-no-room", 0, 100),
        ("cut-jumbo", 6, 9014),
    ] {
        out.write(name, &Seed::new(1).u8(room).u32(0x0102_0304).bytes(&frame(len)));
    }
    // Control messages.
    let mut members = Vec::new();
    for i in 0..3u8 {
        let id = common::identity(i);
        members.extend_from_slice(&id.id().0);
        members.extend_from_slice(&id.keys().public);
    }
    out.write("control-keepalive", &Seed::new(2).u8(0));
    out.write("control-ack", &Seed::new(2).u8(1).u32(5).u32(7));
    out.write("control-get", &Seed::new(2).u8(2).u32(24));
    out.write("control-members", &Seed::new(2).u8(3).u32(3).u32(3).u32(0).bytes(&members));
    // Sealing.
    out.write("seal-data", &Seed::new(3).u8(1).u16(0x0101).u16(0x2a3).bytes(b"a fragment plaintext"));
    out.write("seal-control", &Seed::new(3).u8(6).u16(0x80).u16(0).bytes(&[1]));
    out.write("seal-empty", &Seed::new(3).u8(0).u16(7).u16(9));
    out.written
}

/// Op bytes of the client target.
mod client_op {
    pub const RAW: u8 = 0;
    pub const FRAME: u8 = 1;
    pub const DELIVER: u8 = 2;
    pub const MUTATE: u8 = 3;
    pub const REPLAY: u8 = 4;
    pub const SEND: u8 = 5;
    pub const TCP: u8 = 6;
    pub const FLUSH: u8 = 7;
    pub const TIME: u8 = 8;
    pub const DATA: u8 = 9;
    pub const HANDSHAKE: u8 = 10;
    pub const CONTROL: u8 = 11;
    pub const ROUTED: u8 = 12;
    pub const REJOIN: u8 = 13;
    pub const MEMBERS: u8 = 14;
    pub const ANSWER: u8 = 15;
    /// Deliver everything in the inbox (8 at a time).
    pub const DELIVER_8: u8 = DELIVER | 7 << 4;
}

/// A fragment plaintext: frame id, index, count, MACs, chunk.
fn fragment(id: u32, index: u8, count: u8, dst: [u8; 6], src: [u8; 6], chunk: &[u8]) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[index, count]);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&src);
    p.extend_from_slice(chunk);
    p
}

fn client(root: &Path) -> usize {
    use client_op::*;
    let mut out = Out::new(root, "client");
    const GREET: u8 = 0x80;
    let deliver_all = |s: Seed| s.u8(DELIVER_8).u8(DELIVER_8).u8(DELIVER_8);
    // Frames from member 1 (to us, broadcast) and member 2, whole and cut.
    let s = Seed::new(GREET | 1 << 4)
        .u8(FRAME).u8(4).blob(&[1; 100])
        .u8(FRAME).u8(0).blob(&[2; 3000])
        .u8(FRAME).u8(8 | 4).blob(&[3; 40]);
    out.write("frames", &deliver_all(s));
    // The same without a session: the handshake goes first.
    let s = Seed::new(0).u8(FRAME).u8(4).blob(&[1; 100]);
    out.write("frames-handshake-first", &deliver_all(deliver_all(s)));
    // A MAC another member owns, and our own.
    let s = Seed::new(GREET)
        .u8(FRAME).u8(4 | 2 << 4).blob(&[4; 20])
        .u8(FRAME).u8(4 | 1 << 4).blob(&[5; 20]);
    out.write("mac-taken", &deliver_all(s));
    // TCP segments to coalesce, one with a bad checksum, then a flush.
    let mut s = Seed::new(GREET | 1 | 2 << 4);
    for how in [0u8, 0, 8, 0x20, 4, 4 | 8] {
        s = s.u8(TCP).u8(how).u8(200);
    }
    out.write("tcp-coalesced", &deliver_all(s).u8(FLUSH));
    // SYNs with an MSS option get it clamped (knob bit 1), IPv4 and IPv6,
    // as frames of member 1 (EtherType picked by bits 6-7).
    let mut s = Seed::new(GREET | 2 | 2 << 2);
    for (v6, how) in [(false, 4 | 1 << 6), (true, 4 | 2 << 6)] {
        let syn = common::tcp_segment_with(
            common::Flow { v6, dst: common::member_mac(0), src: common::member_mac(1), id: 9 },
            1,
            flags::SYN,
            &[2, 4, 0x23, 0x28],
            &[],
            false,
        );
        s = s.u8(FRAME).u8(how).blob(&syn[14..]);
    }
    out.write("syn-clamped", &deliver_all(s));
    // Time: keepalives, a rekey, old keys expiring; then frames again.
    let mut s = Seed::new(GREET);
    for _ in 0..3 {
        s = s.u8(TIME | 14 << 4).u8(DELIVER_8);
    }
    s = s.u8(FRAME).u8(4).blob(&[6; 50]);
    out.write("rekey", &deliver_all(s));
    let mut s = Seed::new(GREET | 0x40);
    for _ in 0..4 {
        s = s.u8(TIME | 12 << 4).u8(DELIVER_8).u8(FRAME).u8(4).blob(&[7; 30]).u8(DELIVER_8);
    }
    out.write("short-timers", &s);
    // A member list from a relay-key holder; a keepalive answer that says
    // the list changed; a bare control message.
    let s = Seed::new(GREET)
        .u8(CONTROL).u8(1).u8(9).u8(5).u8(0).u8(5).bytes(&[0, 1, 2, 3, 0x83])
        .u8(DELIVER)
        .u8(CONTROL).u8(0).u16(7).u16(42)
        .u8(DELIVER_8)
        .u8(CONTROL).u8(2).blob(&[1]);
    out.write("relay-control", &deliver_all(s));
    // Member 1 seals fragment plaintexts of its own: whole, cut, bad.
    let a = common::member_mac(0);
    let b = common::member_mac(1);
    let s = Seed::new(GREET)
        .u8(DATA).blob(&fragment(1, 0, 1, a, b, &[8, 0x88, 0xb5, 1, 2, 3]))
        .u8(DATA).blob(&fragment(2, 1, 2, a, b, b"second"))
        .u8(DATA).blob(&fragment(2, 0, 2, a, b, &[0x88, 0xb5, 9]))
        .u8(DATA).blob(&fragment(3, 2, 2, a, b, b"bad"))
        .u8(DATA).blob(&[]);
    out.write("member-data", &deliver_all(s));
    // Handshakes: made-up PeerInit and PeerResp from member 1, routed
    // datagrams from a relay-key holder.
    let s = Seed::new(GREET)
        .u8(HANDSHAKE).blob(&[0x11; 128])
        .u8(HANDSHAKE | 1 << 4).blob(&[0x22; 56])
        .u8(ROUTED).u8(2).blob(&[0; 40])
        .u8(ROUTED).u8(0 | 5 << 2).blob(&[])
        .u8(ROUTED).u8(1 | 3 << 2).blob(&[]);
    out.write("handshakes-routed", &deliver_all(s));
    // Rejoin: a new uplink handshake, answered; a made-up answer; members
    // leaving and coming back.
    let s = Seed::new(GREET)
        .u8(REJOIN).u8(DELIVER_8)
        .u8(ANSWER).blob(&[0; 60])
        .u8(ANSWER | 1 << 4).blob(&[0; 48])
        .u8(TIME | 3 << 4).u8(DELIVER_8)
        .u8(MEMBERS).u8(TIME | 14 << 4).u8(DELIVER_8)
        .u8(MEMBERS | 1 << 4).u8(MEMBERS | 2 << 4).u8(DELIVER_8);
    out.write("rejoin-members", &deliver_all(s));
    // Our own frames: plain, a TCP super-frame header, junk header.
    let seg = common::tcp_segment(
        common::Flow { v6: false, dst: common::member_mac(1), src: a, id: 3 },
        7,
        flags::ACK,
        &[9; 3000],
        false,
    );
    let gso = [1u8, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0];
    let s = Seed::new(GREET)
        .u8(SEND).u8(5).blob(&[1; 64])
        .u8(SEND).u8(8).bytes(&gso).blob(&seg)
        .u8(SEND).u8(8).bytes(&[0xff; 10]).blob(&[0; 80]);
    out.write("send", &deliver_all(s));
    // Mutations, replays and raw datagrams.
    let s = Seed::new(GREET)
        .u8(FRAME).u8(4).blob(&[1; 100])
        .u8(DELIVER)
        .u8(REPLAY).u8(0)
        .u8(MUTATE).u8(0).u16(3 << 3)
        .u8(MUTATE).u8(0).u16(40 << 3 | 1)
        .u8(RAW).blob(&[2, 7, 0, 0])
        .u8(RAW | 1 << 4).blob(&[2, 8, 0, 0, 1, 2, 3, 4]);
    out.write("mutate-replay-raw", &s);

    // Genuine datagrams as raw blobs, captured from the same world: what
    // the relay sends member 0 when member 1 greets (its PeerInit), the
    // member list after member 2 restarts. (No Data carrying a frame: the
    // target counts frames delivered against frames sent in the run.)
    for (name, knobs, act) in [
        ("raw-genuine-peer-init", 0u8, 0u8),
        ("raw-genuine-control", GREET, 1),
        ("raw-genuine-rejoin-answer", GREET, 2),
    ] {
        let mut w = common::client_world(knobs);
        match act {
            0 => {
                let mut f = common::greeting(1);
                w.member_frame(1, &VnetHdr::NONE, &mut f, 1500);
                w.pump();
            }
            1 => w.advance(Duration::from_secs(5)),
            _ => {
                // Our uplink handshake again, answered by the relay.
                let (now, us) = (w.now, w.members[0].id);
                let index = w.relay.fuzz_sending_keypair(now, us).map_or(0, |k| k.local_index);
                let mut r = codec::header(Kind::Rejoin).to_vec();
                r.extend_from_slice(&index.to_be_bytes());
                w.deliver(0, common::relay_addr(), &r);
                w.pump();
            }
        }
        let mut s = Seed::new(knobs);
        if act == 2 {
            s = s.u8(REJOIN);
        }
        let mut raw = Vec::new();
        for d in w.inbox.iter() {
            let inner_frame = codec::peek(d) == Ok(Kind::Data)
                && d.len() > routed::OVERHEAD + data::HEADER_LEN + codec::TAG_LEN;
            if !inner_frame && raw.len() < 6 {
                s = s.u8(RAW).blob(d);
                raw.push(d.clone());
            }
        }
        out.write(name, &s.u8(DELIVER_8));
        // A fresh world of the target takes them.
        if act != 2 {
            let mut w = common::client_world(knobs);
            for d in &raw {
                let e = w.deliver(0, common::relay_addr(), d);
                assert!(!matches!(e, lanbridge::core::client::ClientEvent::Drop(_)), "{name}: {e:?}");
            }
        }
    }
    out.written
}

/// Op bytes of the relay target.
mod relay_op {
    pub const RAW: u8 = 0;
    pub const FRAME: u8 = 1;
    pub const MOVE: u8 = 2;
    pub const REPLAY: u8 = 3;
    pub const MUTATE: u8 = 4;
    pub const CONTROL: u8 = 5;
    pub const ROUTED: u8 = 6;
    pub const TIME: u8 = 7;
    pub const JOIN: u8 = 8;
    pub const INIT: u8 = 9;
    pub const SILENCE: u8 = 10;
    pub const RESTART: u8 = 11;
}

fn relay(root: &Path) -> usize {
    use relay_op::*;
    let mut out = Out::new(root, "relay");
    const GREET: u8 = 0x80;
    let m = |op: u8, member: u8| op | member << 4;
    // Two members (and one of network B): frames both ways, broadcast.
    let s = Seed::new(2 | GREET)
        .u8(m(FRAME, 0)).u8(5).u8(10)
        .u8(m(FRAME, 1)).u8(4).u8(200)
        .u8(m(FRAME, 2)).u8(0).u8(3)
        .u8(m(FRAME, 0)).u8(0).u8(0);
    out.write("frames", &s);
    // Control from members: keepalive, member lists, relay-only messages.
    let s = Seed::new(1)
        .u8(m(CONTROL, 0)).u8(0)
        .u8(m(CONTROL, 1)).u8(1).u16(0)
        .u8(m(CONTROL, 1)).u8(1).u16(500)
        .u8(m(CONTROL, 0)).u8(2)
        .u8(m(CONTROL, 0)).u8(3)
        .u8(m(CONTROL, 0)).u8(4).blob(&[9, 9]);
    out.write("control", &s);
    // Routed datagrams to each member, itself, nobody, across networks.
    let mut s = Seed::new(2 | GREET);
    for how in [0u8, 1 | 1 << 2, 2 | 2 << 2, 2 | 6 << 2, 2 | 7 << 2, 0 | 1 << 2] {
        s = s.u8(m(ROUTED, 0)).u8(how).blob(&[how; 30]);
    }
    out.write("routed", &s);
    // Joins: a refused key, the cap, cookies under load.
    let s = Seed::new(1 | 4 | 0x20)
        .u8(JOIN).u8(JOIN | 4 << 4).u8(JOIN | 1 << 4 | 0x80)
        .u8(TIME | 3 << 4);
    out.write("joins-cap-refused", &s);
    let s = Seed::new(1 | 8)
        .u8(JOIN).u8(JOIN | 1 << 4)
        .u8(TIME | 3 << 4).u8(TIME | 3 << 4).u8(TIME | 5 << 4);
    out.write("cookies", &s);
    // Moving, replays and flips from elsewhere.
    let s = Seed::new(1 | GREET)
        .u8(m(FRAME, 0)).u8(5).u8(4)
        .u8(m(MOVE, 0)).u8(4)
        .u8(m(FRAME, 0)).u8(5).u8(4)
        .u8(REPLAY).u8(0).u8(6)
        .u8(REPLAY).u8(3).u8(1)
        .u8(MUTATE).u8(1).u8(7).u16(30 << 3)
        .u8(MUTATE).u8(2).u8(0).u16(9 << 3 | 2)
        .u8(m(MOVE, 1)).u8(0)
        .u8(m(FRAME, 1)).u8(5).u8(4);
    out.write("roaming-replays", &s);
    // v1's fuzz/regressions/relay find, in v2 terms: two members at one
    // address, frames between them (never forwarded back to the address).
    let s = Seed::new(1 | GREET)
        .u8(m(MOVE, 1)).u8(0)
        .u8(m(FRAME, 1)).u8(4).u8(2)
        .u8(m(FRAME, 0)).u8(0).u8(2)
        .u8(m(FRAME, 0)).u8(5).u8(2);
    out.write("regression-forward-to-own-source", &s);
    // Time: silence, timeouts, restarts, rekeys.
    let s = Seed::new(1 | 0x40 | 0x10)
        .u8(m(SILENCE, 1))
        .u8(TIME | 9 << 4)
        .u8(m(SILENCE, 1) | 0x80)
        .u8(TIME | 12 << 4)
        .u8(m(RESTART, 0))
        .u8(TIME | 14 << 4);
    out.write("time", &s);
    // Made-up initiations: right mac1, wrong mac1, network B, unknown.
    let s = Seed::new(0)
        .u8(INIT).u8(0).blob(&[1; 40])
        .u8(INIT).u8(4).blob(&[2; 40])
        .u8(INIT).u8(1).blob(&[3; 40])
        .u8(INIT).u8(2).blob(&[])
        .u8(RAW | 5 << 4).blob(&[1, 1, 0, 0])
        .u8(RAW).blob(&[2, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
    out.write("made-up", &s);
    // Genuine datagrams as raw blobs, captured from the same world: a new
    // member's initiation; a member's greeting (PeerInit, or Data with a
    // session) and a control message.
    for knobs in [1u8, 1 | GREET] {
        let (mut w, config) = common::relay_world(knobs);
        let mut s = Seed::new(knobs);
        let i = w.add_member(0, config);
        w.hold = true;
        w.tap = Some(i);
        w.poll_member(i);
        for d in std::mem::take(&mut w.outbox) {
            s = s.u8(RAW | (i as u8) << 4).blob(&d);
        }
        w.tap = Some(0);
        let mut f = common::greeting(0);
        w.member_frame(0, &VnetHdr::NONE, &mut f, 1500);
        let now = w.now;
        if let Some(d) = w.members[0].client.fuzz_uplink_keypair(now).and_then(|kp| {
            let mut p = Vec::new();
            Control::GetMembers { from: 0 }.encode(&mut p);
            common::seal_control(kp, &p)
        }) {
            w.outbox.push_back(d);
        }
        let mine = std::mem::take(&mut w.outbox);
        for d in &mine {
            s = s.u8(RAW).blob(d);
        }
        out.write(&format!("raw-genuine-{knobs:02x}"), &s);
        // A fresh world of the target takes them.
        let (mut w, _) = common::relay_world(knobs);
        for d in &mine {
            let a = w.relay_step(common::addrs()[0], d);
            assert!(!matches!(a, common::Action::Drop(_)), "{knobs:02x}: {a:?}");
        }
    }
    out.written
}

/// Op bytes of the handshake target.
mod handshake_op {
    pub const INIT: u8 = 0;
    pub const RESP: u8 = 1;
    pub const COOKIE: u8 = 2;
    pub const PEER_INIT: u8 = 3;
    pub const PEER_RESP: u8 = 4;
    pub const RELEASE: u8 = 5;
    pub const DELIVER: u8 = 6;
    pub const TIME: u8 = 7;
    pub const REJOIN: u8 = 8;
    pub const RAW: u8 = 9;
    pub const MEMBER: u8 = 10;
}

fn handshake(root: &Path) -> usize {
    use handshake_op::*;
    let mut out = Out::new(root, "handshake");
    const GREET: u8 = 0x10;
    const NOT_JOINED: u8 = 0x20;
    let ts = |secs: u64| {
        let t = lanbridge::core::proto::session::tai64n(common::WALL + Duration::from_secs(secs));
        t.to_vec()
    };
    let mut payload = ts(30);
    payload.extend_from_slice(&[0, 0, 0, 2]);
    // Genuine initiations: new members, a refused key, replayed and older
    // timestamps, network B, mac1 wrong, PSK and static key wrong.
    let s = Seed::new(8)
        .u8(INIT | 6 << 4).u8(1 | 2 << 2).u32(1).bytes(&payload)
        .u8(INIT | 6 << 4).u8(1 | 2 << 2).u32(2).bytes(&payload)
        .u8(INIT | 7 << 4).u8(1 | 5 << 2).u32(3).bytes(&payload)
        .u8(INIT).u8(1 | 3 << 2 | 0x80).u32(4).bytes(&payload)
        .u8(INIT).u8(1 | 4 << 2 | 0x20).u32(5).bytes(&payload)
        .u8(INIT).u8(2 | 4 << 2).u32(6).bytes(&payload)
        .u8(INIT).u8(3 | 4 << 2).u32(7).bytes(&payload)
        .u8(INIT).u8(0).u32(8).blob(&[7; 100]);
    out.write("initiations", &s);
    // Under load: a cookie, then mac2 under it; the member's own retries.
    let s = Seed::new(2)
        .u8(INIT | 6 << 4).u8(1 | 2 << 2).u32(1).bytes(&payload)
        .u8(INIT | 6 << 4).u8(1 | 2 << 2 | 0x40).u32(1).bytes(&payload)
        .u8(REJOIN).u8(RELEASE).u8(DELIVER)
        .u8(TIME | 3 << 4).u8(RELEASE).u8(DELIVER);
    out.write("cookies", &s);
    // Member 0 waits on its first initiation: answers genuine and not,
    // cookies genuine and not, then the relay's own answer.
    let s = Seed::new(NOT_JOINED)
        .u8(COOKIE).u8(0).blob(&[2; 44])
        .u8(COOKIE).u8(1).bytes(&[3; 28])
        .u8(RESP).u8(1).u32(9).bytes(&[0, 5, 0, 0])
        .u8(REJOIN).u8(RESP).u8(0).u32(9).blob(&[1; 52])
        .u8(REJOIN).u8(RESP).u8(1).u32(9).bytes(&[0, 0, 0, 0])
        .u8(RELEASE).u8(DELIVER);
    out.write("uplink-answers", &s);
    let s = Seed::new(NOT_JOINED).u8(RELEASE).u8(DELIVER).u8(TIME | 4 << 4).u8(RELEASE).u8(DELIVER);
    out.write("join-for-real", &s);
    // Member handshakes: genuine from member 1, from a stranger through a
    // relay-key holder, under the relay key, from ourselves, made up.
    let t = ts(40);
    let s = Seed::new(0)
        .u8(PEER_INIT).u8(1 | 1 << 2).u32(1).bytes(&t)
        .u8(PEER_INIT).u8(1 | 1 << 2).u32(2).bytes(&t)
        .u8(PEER_INIT).u8(1 | 3 << 2 | 0x40).u32(3).bytes(&t)
        .u8(PEER_INIT).u8(2 | 1 << 2).u32(4).bytes(&t)
        .u8(PEER_INIT).u8(1 | 0x40).u32(5).bytes(&t)
        .u8(PEER_INIT).u8(1 | 1 << 2 | 0x20).u32(6).bytes(&t)
        .u8(PEER_INIT).u8(0).u32(7).blob(&[5; 90])
        .u8(RELEASE).u8(DELIVER);
    out.write("peer-inits", &s);
    let s = Seed::new(0)
        .u8(PEER_RESP).u8(0).u32(1).blob(&[6; 48])
        .u8(PEER_RESP).u8(1).u32(2)
        .u8(PEER_RESP).u8(1).u32(3)
        .u8(RELEASE).u8(DELIVER).u8(RELEASE);
    out.write("peer-resps", &s);
    // Rejoin, retries, member 1 restarting and greeting.
    let s = Seed::new(GREET)
        .u8(REJOIN).u8(TIME | 3 << 4).u8(TIME | 3 << 4).u8(RELEASE).u8(DELIVER)
        .u8(MEMBER | 1 << 4).u8(MEMBER).u8(DELIVER).u8(RELEASE)
        .u8(REJOIN | 1 << 4).u32(77)
        .u8(RAW).blob(&[2, 8, 0, 0, 0, 0, 0, 1])
        .u8(RAW | 0x80).blob(&[2, 1, 0, 0]);
    out.write("rejoin-raw", &s);
    // Genuine messages as raw blobs: the relay's answer to the initiation
    // member 0 waits on (it joins), its own initiation to the relay.
    let mut w = common::handshake_world(NOT_JOINED);
    let init = w.outbox.front().cloned().unwrap_or_default();
    w.release();
    let answer = w.inbox.front().cloned().unwrap_or_default();
    out.write("raw-genuine-answer", &Seed::new(NOT_JOINED).u8(RAW).blob(&answer).u8(RELEASE));
    let mut w = common::handshake_world(NOT_JOINED);
    let e = w.deliver(0, common::relay_addr(), &answer);
    assert_eq!(e, lanbridge::core::client::ClientEvent::Registered);
    out.write("raw-genuine-init", &Seed::new(NOT_JOINED).u8(RAW | 0x80).blob(&init));
    out.written
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds".into());
    let root = Path::new(&root);
    let n = [datagram(root), client(root), relay(root), handshake(root)];
    println!(
        "wrote {} seeds: datagram {}, client {}, relay {}, handshake {}",
        n.iter().sum::<usize>(),
        n[0],
        n[1],
        n[2],
        n[3]
    );
}
