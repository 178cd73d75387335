//! The relay client: the protocol side shared by `edge` and `bridge`.
//!
//! It registers with the relay, keeps the registration (and any NAT mapping on
//! the way) alive, seals local frames into datagrams, and authenticates,
//! de-duplicates and reassembles datagrams from the relay into frames.
//!
//! Registration is self-healing: the client re-registers when the relay says
//! it doesn't know us (`NotRegistered`, e.g. after a relay restart) or when
//! the relay has been silent for [`ClientConfig::dead_after`] keepalives.
//!
//! # The fast path (docs/protocol.md, "RoutedFrame")
//! Every datagram stands alone, so a lost one costs only the packet it
//! carries:
//! * **Sending** ([`Client::handle_frame`]): a GSO super-frame from the
//!   local device is cut along its own segment boundaries (TCP segments
//!   small enough for one datagram) with every header and checksum
//!   finished ([`offload::segment`]), and each segment is sealed on its
//!   own. A SYN's MSS is clamped first ([`mss::clamp_mss`]), so that the
//!   connection's full-size segments fit one datagram too.
//! * **Receiving** ([`Client::handle_datagram`], [`Client::flush`]): frames
//!   pass through a [`Coalescer`] that puts consecutive TCP segments of a
//!   flow back into one super-frame with a vnet header, as Linux GRO would,
//!   so the local kernel still gets 64 KiB writes. The driver calls
//!   [`Client::flush`] after the last datagram of every receive batch.
//!
//! Which kind carries frames is negotiated: RoutedFrame (kind 8: the relay
//! switches on a clear route under a relay tag and never decrypts) while
//! the relay's last RegisterAck had [`CAP_ROUTED`], Frame (kind 6)
//! otherwise. Both are sealed per datagram; segmenting and coalescing
//! happen either way.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::core::{
    drop::{DropCounters, DropReason},
    frame::mss,
    gro::Coalescer,
    offload::{self, GsoType, VnetHdr},
    wire::{
        self, Cipher, Header, KeyCache, Kind, Message, Reassembler, ReplayGuard, Sealer, SessionId,
        CAP_ROUTED,
    },
};

/// After a `NotRegistered`, the client registers at once unless it sent a
/// control message this recently.
const REGISTER_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// Timers and limits of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Keepalive interval until the relay tells us its own.
    pub keepalive: Duration,
    /// Interval between registration attempts while unregistered.
    pub register_retry: Duration,
    /// Keepalive intervals without a word from the relay before registering again.
    pub dead_after: u32,
    /// Largest datagram sent; frames are cut into fragments to fit.
    pub max_datagram: usize,
    /// Sender sessions whose replay windows are remembered.
    pub max_senders: usize,
    /// The local device takes super-frames with offload metadata (a TAP
    /// with a vnet header, an AF_PACKET socket): coalesce received TCP
    /// segments into super-frames, and advertise [`CAP_ROUTED`].
    pub offload: bool,
    /// Clamp the MSS of TCP SYNs crossing the overlay, both ways, so that a
    /// full segment fits one datagram.
    pub clamp_mss: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            keepalive: Duration::from_secs(5),
            register_retry: Duration::from_secs(1),
            dead_after: 3,
            max_datagram: wire::DEFAULT_MAX_DATAGRAM,
            max_senders: 4096,
            offload: false,
            clamp_mss: true,
        }
    }
}

/// What a received datagram produced (frames go to the `deliver` callback).
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A frame was completed: delivered, or held by the coalescer until
    /// more segments come or [`Client::flush`].
    Frame,
    /// The relay accepted our registration (logged by the driver).
    Registered,
    /// A control message, or a fragment of a frame not yet complete.
    Nothing,
    /// The datagram was dropped; the reason is counted.
    Drop(DropReason),
}

/// Counters of a client.
#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    /// Frames sealed and sent (a super-frame counts once per segment).
    pub frames_out: u64,
    /// Frames received (before coalescing).
    pub frames_in: u64,
    /// Super-frames from the local device, cut into segments and sent.
    pub offload_frames_out: u64,
    /// Super-frames rebuilt from received segments and delivered whole.
    pub offload_frames_in: u64,
    /// TCP SYNs whose MSS option was lowered, either way.
    pub mss_clamped: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Times the client (re-)registered.
    pub registrations: u64,
    /// Drops per reason.
    pub drops: DropCounters,
}

/// The relay client state machine.
pub struct Client {
    config: ClientConfig,
    cipher: Cipher,
    sealer: Sealer,
    relay: SocketAddr,
    registered: bool,
    /// Capabilities in the relay's last RegisterAck.
    relay_caps: u32,
    keepalive: Duration,
    last_sent: Option<Instant>,
    last_heard: Option<Instant>,
    replay: ReplayGuard,
    keys: KeyCache,
    reassembler: Reassembler,
    /// Puts received TCP segments back together (only with `offload`).
    gro: Option<Coalescer>,
    /// Plaintext of the datagram being opened.
    scratch: Vec<u8>,
    /// A received SYN, copied to clamp its MSS.
    syn: Vec<u8>,
    /// One segment of a super-frame being sent.
    segment: Vec<u8>,
    out: Vec<u8>,
    stats: ClientStats,
}

impl Client {
    /// A client of the relay at `relay`, not yet registered.
    pub fn new(
        config: ClientConfig,
        cipher: Cipher,
        session: SessionId,
        relay: SocketAddr,
    ) -> Self {
        Client {
            keepalive: config.keepalive,
            replay: ReplayGuard::new(config.max_senders),
            gro: config.offload.then(Coalescer::new),
            config,
            cipher,
            sealer: Sealer::new(session),
            relay,
            registered: false,
            relay_caps: 0,
            last_sent: None,
            last_heard: None,
            keys: KeyCache::default(),
            reassembler: Reassembler::default(),
            scratch: Vec::with_capacity(2048),
            syn: Vec::with_capacity(128),
            segment: Vec::with_capacity(2048),
            out: Vec::with_capacity(128),
            stats: ClientStats::default(),
        }
    }

    /// The relay's address.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Follows the relay to a new address; registers again there.
    pub fn set_relay(&mut self, relay: SocketAddr) {
        self.relay = relay;
        self.registered = false;
        self.last_sent = None;
    }

    /// True once the relay acknowledged our registration, until it is lost.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// True when frames go as RoutedFrame (kind 8): we can take them, and
    /// the relay said every peer of the network can.
    pub fn offload_ok(&self) -> bool {
        self.config.offload && self.registered && self.relay_caps & CAP_ROUTED != 0
    }

    fn caps(&self) -> u32 {
        if self.config.offload {
            CAP_ROUTED
        } else {
            0
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Counts drops that happened in the driver (e.g. failed sends).
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        self.stats.drops.add_n(reason, n);
    }

    /// Seals a frame read from the local device, with the offload metadata
    /// it came with (`VnetHdr::NONE` for a plain frame); `emit` gets each
    /// datagram for the relay, in order. A super-frame or a partial checksum
    /// is finished here: cut along its segments (TCP segments small enough
    /// for one datagram; at most `mtu` bytes of IP packet each), every
    /// checksum complete, each segment sealed alone. A SYN's MSS is clamped
    /// in `frame` first. Failures are counted drops.
    // HOT PATH
    pub fn handle_frame(
        &mut self,
        hdr: &VnetHdr,
        frame: &mut [u8],
        mtu: usize,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let max_frame = wire::max_frame_in_one_datagram(self.config.max_datagram);
        // A SYN is never a super-frame; any other frame leaves clamp_mss
        // after a few reads. No length limit: a SYN may carry data (TCP
        // Fast Open) or IPv4 options.
        if self.config.clamp_mss
            && hdr.gso_type == 0
            && mss::clamp_mss(frame, max_frame, hdr.needs_csum()).is_some()
        {
            self.stats.mss_clamped += 1;
        }
        if *hdr == VnetHdr::NONE {
            let _ = self.seal(frame, emit);
            return;
        }
        let mtu = match hdr.gso() {
            Ok(GsoType::TcpV4 | GsoType::TcpV6) => mtu.min(max_frame.saturating_sub(l2_len(frame))),
            _ => mtu,
        };
        let mut segment = std::mem::take(&mut self.segment);
        let result = offload::segment(hdr, frame, mtu, &mut segment, &mut |seg| {
            let _ = self.seal(seg, emit);
        });
        self.segment = segment;
        match result {
            Ok(_) if hdr.gso_type != 0 => self.stats.offload_frames_out += 1,
            Ok(_) => {}
            Err(e) => self.stats.drops.add(e.drop_reason()),
        }
    }

    /// Seals one wire-ready frame as RoutedFrame or Frame datagrams.
    fn seal(&mut self, frame: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), DropReason> {
        let routed = self.offload_ok();
        let stats = &mut self.stats;
        let max = self.config.max_datagram;
        let mut counted = |d: &[u8]| {
            stats.datagrams_out += 1;
            emit(d)
        };
        let sealed = if routed {
            self.sealer
                .seal_routed_frame(&self.cipher, frame, max, &mut counted)
        } else {
            self.sealer
                .seal_frame(&self.cipher, frame, max, &mut counted)
        };
        match sealed {
            Ok(_) => {
                self.stats.frames_out += 1;
                Ok(())
            }
            Err(e) => {
                let reason = e.drop_reason();
                self.stats.drops.add(reason);
                Err(reason)
            }
        }
    }

    /// Handles one datagram from `from`. Control answers go to `transmit`;
    /// frames go to `deliver` with their offload metadata (`VnetHdr::NONE`,
    /// or a super-frame the coalescer rebuilt), possibly only at a later
    /// call or at [`Client::flush`]. Every failure is a counted drop.
    // HOT PATH
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        transmit: &mut dyn FnMut(&[u8]),
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) -> ClientEvent {
        self.stats.datagrams_in += 1;
        let opened = self.accept(now, from, datagram, |c, d| {
            if d.get(1) == Some(&(Kind::RoutedFrame as u8)) {
                let (header, _) = wire::open_routed(&c.cipher, &mut c.keys, d, &mut c.scratch)
                    .map_err(|e| e.drop_reason())?;
                return Ok((header, Opened::Frame(header.session)));
            }
            let (header, message) = wire::open_cached(&c.cipher, &mut c.keys, d, &mut c.scratch)
                .map_err(|e| e.drop_reason())?;
            Ok((header, Opened::from_message(header.session, message)?))
        });
        let opened = match opened {
            Ok((_, opened)) => opened,
            Err(reason) => {
                self.stats.drops.add(reason);
                return ClientEvent::Drop(reason);
            }
        };
        self.last_heard = Some(now);
        match opened {
            Opened::Frame(session) => self.reassemble(now, session, deliver),
            Opened::RegisterAck {
                keepalive_secs,
                caps,
            } => {
                self.keepalive = Duration::from_secs(u64::from(keepalive_secs.max(1)));
                self.relay_caps = caps;
                if self.registered {
                    return ClientEvent::Nothing;
                }
                self.registered = true;
                self.stats.registrations += 1;
                ClientEvent::Registered
            }
            Opened::KeepaliveAck => ClientEvent::Nothing,
            Opened::NotRegistered => {
                let was_registered = std::mem::replace(&mut self.registered, false);
                let recent = self
                    .last_sent
                    .is_some_and(|t| now.saturating_duration_since(t) < REGISTER_AGAIN_AFTER);
                if was_registered || !recent {
                    let caps = self.caps();
                    self.send_control(now, Message::Register { caps }, transmit);
                }
                ClientEvent::Nothing
            }
        }
    }

    /// Reassembles the fragment whose plaintext (route and chunk, the same
    /// for Frame and RoutedFrame) is in `scratch`, and delivers the frame
    /// it completes, if any, through the coalescer.
    fn reassemble(
        &mut self,
        now: Instant,
        session: SessionId,
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) -> ClientEvent {
        let fragment = match Message::parse(Kind::Frame, &self.scratch) {
            Ok(Message::Frame(f)) => f,
            Ok(_) | Err(_) => {
                self.stats.drops.add(DropReason::Malformed);
                return ClientEvent::Drop(DropReason::Malformed);
            }
        };
        let frame = match self.reassembler.push(now, session, &fragment) {
            Ok(Some(r)) => r.frame,
            Ok(None) => return ClientEvent::Nothing,
            Err(e) => {
                let reason = e.drop_reason();
                self.stats.drops.add(reason);
                return ClientEvent::Drop(reason);
            }
        };
        self.stats.frames_in += 1;
        // A SYN from a peer that didn't clamp (an older version) is clamped
        // here, so what the local host sends back fits one datagram.
        let frame = if self.config.clamp_mss && mss::is_syn(frame) {
            self.syn.clear();
            self.syn.extend_from_slice(frame);
            let max_frame = wire::max_frame_in_one_datagram(self.config.max_datagram);
            if mss::clamp_mss(&mut self.syn, max_frame, false).is_some() {
                self.stats.mss_clamped += 1;
            }
            &self.syn[..]
        } else {
            frame
        };
        match &mut self.gro {
            Some(gro) => gro.push(frame, deliver),
            None => deliver(&VnetHdr::NONE, frame),
        }
        ClientEvent::Frame
    }

    /// Ends a receive batch: delivers the super-frame the coalescer holds,
    /// if any. Drivers call it after the last datagram of every batch.
    // HOT PATH
    pub fn flush(&mut self, deliver: &mut dyn FnMut(&VnetHdr, &[u8])) {
        if let Some(gro) = &mut self.gro {
            gro.flush(deliver);
            self.stats.offload_frames_in = gro.stats().superframes_out;
        }
    }

    /// Checks the sender, the replay window (before) and `open`, and moves
    /// the window only once `open` authenticated the datagram, so nothing
    /// unauthenticated can use up a counter.
    fn accept<'d, T>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'d [u8],
        open: impl FnOnce(&mut Self, &'d [u8]) -> Result<(Header, T), DropReason>,
    ) -> Result<(Header, T), DropReason> {
        if from != self.relay {
            return Err(DropReason::UnknownSender);
        }
        let header = wire::peek_header(datagram).map_err(|e| e.drop_reason())?;
        if !self.replay.check(header.session, header.counter) {
            return Err(DropReason::Replayed);
        }
        let (header, opened) = open(self, datagram)?;
        if !self.replay.update(now, header.session, header.counter) {
            return Err(DropReason::Replayed);
        }
        Ok((header, opened))
    }

    /// Runs timers: registration retries, keepalives, relay loss, reassembly
    /// and replay-state expiry. Returns when to call again.
    pub fn poll(&mut self, now: Instant, emit: &mut dyn FnMut(&[u8])) -> Instant {
        let timed_out = self.reassembler.expire(now) as u64;
        self.stats
            .drops
            .add_n(DropReason::ReassemblyTimeout, timed_out);
        self.replay.expire(now, self.keepalive * 60);
        if self.registered {
            let silent_for = self
                .last_heard
                .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            if silent_for > self.keepalive * self.config.dead_after {
                self.registered = false;
            }
        }
        let (message, interval) = if self.registered {
            (Message::Keepalive, self.keepalive)
        } else {
            (
                Message::Register { caps: self.caps() },
                self.config.register_retry,
            )
        };
        let due = self.last_sent.map_or(now, |t| t + interval);
        if now >= due {
            self.send_control(now, message, emit);
            return now + interval;
        }
        due
    }

    fn send_control(&mut self, now: Instant, message: Message<'_>, emit: &mut dyn FnMut(&[u8])) {
        match self.sealer.seal(&self.cipher, &message, &mut self.out) {
            Ok(()) => {
                self.last_sent = Some(now);
                self.stats.datagrams_out += 1;
                emit(&self.out);
            }
            Err(e) => self.stats.drops.add(e.drop_reason()),
        }
    }
}

/// What an authenticated datagram carried, without borrowing it.
enum Opened {
    Frame(SessionId),
    RegisterAck { keepalive_secs: u16, caps: u32 },
    KeepaliveAck,
    NotRegistered,
}

impl Opened {
    /// What an authenticated message from the relay means to a client.
    fn from_message(session: SessionId, message: Message<'_>) -> Result<Opened, DropReason> {
        Ok(match message {
            Message::Frame(_) => Opened::Frame(session),
            Message::RegisterAck {
                keepalive_secs,
                caps,
            } => Opened::RegisterAck {
                keepalive_secs,
                caps,
            },
            Message::KeepaliveAck => Opened::KeepaliveAck,
            Message::NotRegistered => Opened::NotRegistered,
            // Only peers send these; a relay never forwards them.
            Message::Register { .. } | Message::Keepalive => return Err(DropReason::UnknownKind),
        })
    }
}

/// Length of a frame's Ethernet header, with its 802.1Q tag if it has one.
fn l2_len(frame: &[u8]) -> usize {
    if frame.get(12..14) == Some(&[0x81, 0x00]) {
        18
    } else {
        14
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{mac::MacAddr, offload::complete_checksum, sim, wire::NetworkKey};

    const RELAY: &str = "192.0.2.1:7171";

    fn relay_addr() -> SocketAddr {
        RELAY.parse().unwrap()
    }

    /// A client with `offload`, registered with a relay that acked `caps`.
    fn registered(key: &NetworkKey, session: u8, offload: bool, caps: u32) -> Client {
        let config = ClientConfig {
            offload,
            ..ClientConfig::default()
        };
        let mut c = Client::new(
            config,
            Cipher::new(key),
            SessionId([session; 16]),
            relay_addr(),
        );
        let mut relay = Sealer::new(SessionId([0xee - session; 16]));
        let mut d = Vec::new();
        let ack = Message::RegisterAck {
            caps,
            keepalive_secs: 5,
        };
        relay.seal(&Cipher::new(key), &ack, &mut d).unwrap();
        let ev = c.handle_datagram(
            Instant::now(),
            relay_addr(),
            &d,
            &mut |_| {},
            &mut |_, _| {},
        );
        assert_eq!(ev, ClientEvent::Registered);
        c
    }

    /// Hands `datagrams` to `to` as one receive batch; returns what it delivered.
    fn receive(to: &mut Client, datagrams: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
        let mut got = Vec::new();
        let mut deliver = |h: &VnetHdr, f: &[u8]| got.push((*h, f.to_vec()));
        for d in datagrams {
            to.handle_datagram(Instant::now(), relay_addr(), d, &mut |_| {}, &mut deliver);
        }
        to.flush(&mut deliver);
        got
    }

    #[test]
    fn a_burst_of_not_registered_answers_costs_one_registration() {
        let key = NetworkKey::from_bytes([9; 32]);
        let relay_addr = relay_addr();
        let t0 = Instant::now();
        let mut client = Client::new(
            ClientConfig::default(),
            Cipher::new(&key),
            SessionId([3; 16]),
            relay_addr,
        );
        let cipher = Cipher::new(&key);
        let mut relay = Sealer::new(SessionId([4; 16]));
        let mut sent = 0;
        client.poll(t0, &mut |_| sent += 1);
        assert_eq!(sent, 1, "first Register");
        let mut d = Vec::new();
        let ack = Message::RegisterAck {
            caps: 0,
            keepalive_secs: 5,
        };
        relay.seal(&cipher, &ack, &mut d).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            client.handle_datagram(t1, relay_addr, &d, &mut |_| sent += 1, &mut |_, _| {}),
            ClientEvent::Registered
        );
        // The relay restarted: every frame in flight gets NotRegistered.
        for i in 0..5 {
            relay
                .seal(&cipher, &Message::NotRegistered, &mut d)
                .unwrap();
            let now = t1 + Duration::from_millis(10 * i);
            client.handle_datagram(now, relay_addr, &d, &mut |_| sent += 1, &mut |_, _| {});
        }
        assert_eq!(sent, 2, "one Register for the whole burst");
        assert!(!client.is_registered());
    }

    /// A 64 KiB TSO super-frame leaves as one datagram per segment, each
    /// segment small enough for one datagram, and arrives as one
    /// super-frame again: the same bytes once its checksum is completed.
    /// Losing one datagram costs one segment; the rest still coalesce.
    #[test]
    fn a_super_frame_crosses_one_segment_per_datagram_and_is_put_back_together() {
        let key = NetworkKey::from_bytes([9; 32]);
        for (v6, caps) in [(false, CAP_ROUTED), (true, CAP_ROUTED), (false, 0)] {
            let mut a = registered(&key, 1, true, caps);
            let mut b = registered(&key, 2, true, caps);
            let (hdr, mut frame, complete) = sim::tcp_super_frame(
                v6,
                MacAddr([2, 0, 0, 0, 0, 1]),
                MacAddr([2, 0, 0, 0, 0, 2]),
                1000,
                60_000,
            );
            let mut datagrams = Vec::new();
            a.handle_frame(&hdr, &mut frame, 1500, &mut |d| datagrams.push(d.to_vec()));
            let mss = wire::max_frame_in_one_datagram(wire::DEFAULT_MAX_DATAGRAM)
                - if v6 { 14 + 40 + 32 } else { 14 + 20 + 32 };
            assert_eq!(
                datagrams.len(),
                60_000usize.div_ceil(mss),
                "v6 {v6} caps {caps}"
            );
            assert!(datagrams
                .iter()
                .all(|d| d.len() <= wire::DEFAULT_MAX_DATAGRAM));
            let kind = if caps == CAP_ROUTED {
                Kind::RoutedFrame
            } else {
                Kind::Frame
            };
            assert!(datagrams.iter().all(|d| d[1] == kind as u8));
            assert_eq!(a.stats().offload_frames_out, 1);

            let got = receive(&mut b, &datagrams);
            assert_eq!(got.len(), 1, "one super-frame");
            let (h, mut f) = got.into_iter().next().unwrap();
            assert_eq!(h.gso().unwrap(), hdr.gso().unwrap());
            assert_eq!(usize::from(h.gso_size), mss);
            h.validate(&f).unwrap();
            complete_checksum(&h, &mut f).unwrap();
            assert!(f == complete, "v6 {v6}: the super-frame changed on the way");

            // One datagram lost in the middle: two super-frames around the
            // hole, one segment's bytes short.
            let (_, mut frame, _) = sim::tcp_super_frame(
                v6,
                MacAddr([2, 0, 0, 0, 0, 1]),
                MacAddr([2, 0, 0, 0, 0, 2]),
                1000,
                60_000,
            );
            datagrams.clear();
            a.handle_frame(&hdr, &mut frame, 1500, &mut |d| datagrams.push(d.to_vec()));
            datagrams.remove(20);
            let got = receive(&mut b, &datagrams);
            assert_eq!(got.len(), 2);
            let hdrs = if v6 { 14 + 40 + 32 } else { 14 + 20 + 32 };
            let bytes: usize = got.iter().map(|(_, f)| f.len() - hdrs).sum();
            assert_eq!(bytes, 60_000 - mss);
        }
    }

    /// The MSS of a SYN (here with MSS 1460) is lowered on the way out, and
    /// on the way in from a sender that did not (an older peer, or
    /// `--no-mss-clamp`), to what fits one datagram: 1272 for IPv4.
    #[test]
    fn syn_mss_is_clamped_both_ways() {
        let key = NetworkKey::from_bytes([9; 32]);
        // A plain SYN, and one carrying 100 bytes (TCP Fast Open).
        let syn = |data: usize| {
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 22, 1, 64240)
                .syn()
                .options_raw(&[2, 4, 0x05, 0xb4, 4, 2, 1, 1])
                .unwrap()
                .write(&mut v, &vec![7; data])
                .unwrap();
            v
        };
        let mss_of = |f: &[u8]| u16::from_be_bytes([f[14 + 20 + 22], f[14 + 20 + 23]]);
        let mut plain = registered(&key, 3, false, 0);
        plain.config.clamp_mss = false;
        let mut a = registered(&key, 1, true, 0);
        let mut b = registered(&key, 2, true, 0);
        for (sender, clamped_by_sender, data) in [(0, 1, 0), (1, 0, 0), (0, 1, 100), (1, 0, 100)] {
            let from = if sender == 0 { &mut a } else { &mut plain };
            let mut datagrams = Vec::new();
            let before_out = from.stats().mss_clamped;
            from.handle_frame(&VnetHdr::NONE, &mut syn(data), 1500, &mut |d| {
                datagrams.push(d.to_vec())
            });
            assert_eq!(from.stats().mss_clamped - before_out, clamped_by_sender);
            let before = b.stats().mss_clamped;
            let got = receive(&mut b, &datagrams);
            assert_eq!(got.len(), 1);
            let f = &got[0].1;
            assert_eq!(mss_of(f), 1272);
            assert_eq!(b.stats().mss_clamped - before, 1 - clamped_by_sender);
            let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
            let (Some(etherparse::TransportSlice::Tcp(t)), Some(etherparse::NetSlice::Ipv4(ip))) =
                (p.transport, p.net)
            else {
                panic!("not TCP/IPv4")
            };
            let want = t
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                .unwrap();
            assert_eq!(t.checksum(), want, "checksum after clamping");
        }
    }

    /// A plain (no vnet) receiver gets segments one by one, checksums
    /// complete.
    #[test]
    fn without_offload_segments_are_delivered_one_by_one() {
        let key = NetworkKey::from_bytes([9; 32]);
        let mut a = registered(&key, 1, true, CAP_ROUTED);
        let mut b = registered(&key, 2, false, 0);
        let (hdr, mut frame, _) = sim::tcp_super_frame(
            false,
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
            1,
            20_000,
        );
        let mut datagrams = Vec::new();
        a.handle_frame(&hdr, &mut frame, 1500, &mut |d| datagrams.push(d.to_vec()));
        let got = receive(&mut b, &datagrams);
        assert_eq!(got.len(), datagrams.len());
        for (h, f) in &got {
            assert_eq!(*h, VnetHdr::NONE);
            let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
            let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else {
                panic!("not TCP")
            };
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
                panic!("not IPv4")
            };
            let want = t
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                .unwrap();
            assert_eq!(t.checksum(), want);
        }
    }

    /// Datagrams cut short or with a byte changed anywhere never panic,
    /// never deliver a frame, are counted, and never use up a counter: the
    /// intact originals still arrive after them.
    #[test]
    fn damaged_routed_datagrams_are_counted_drops_and_cost_nothing_else() {
        let key = NetworkKey::from_bytes([9; 32]);
        let mut a = registered(&key, 1, true, CAP_ROUTED);
        let mut b = registered(&key, 2, true, CAP_ROUTED);
        let mut frame = vec![0u8; 3000];
        frame[..14].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        for (i, x) in frame.iter_mut().enumerate().skip(14) {
            *x = (i * 7) as u8;
        }
        let mut datagrams = Vec::new();
        a.handle_frame(&VnetHdr::NONE, &mut frame.clone(), 9000, &mut |d| {
            datagrams.push(d.to_vec())
        });
        assert_eq!(datagrams.len(), 3);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut damaged = 0u64;
        let drops_before = b.stats().drops.total();
        for d in &datagrams {
            for len in 0..d.len() {
                assert!(
                    receive(&mut b, &[d[..len].to_vec()]).is_empty(),
                    "cut to {len}"
                );
                damaged += 1;
            }
            for _ in 0..300 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut bad = d.clone();
                let at = (seed as usize) % (bad.len() - wire::RELAY_TAG_LEN);
                bad[at] ^= 1 << (seed >> 61);
                assert!(receive(&mut b, &[bad]).is_empty(), "byte {at} changed");
                damaged += 1;
            }
        }
        assert_eq!(b.stats().drops.total() - drops_before, damaged);
        assert_eq!(receive(&mut b, &datagrams), [(VnetHdr::NONE, frame)]);
    }
}
