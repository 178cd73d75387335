//! The relay client: the protocol side shared by `edge` and `bridge`.
//!
//! It registers with the relay, keeps the registration (and any NAT mapping on
//! the way) alive, seals local frames into datagrams, and authenticates,
//! de-duplicates and reassembles datagrams from the relay into frames.
//!
//! Registration is self-healing: the client re-registers when the relay says
//! it doesn't know us (`NotRegistered`, e.g. after a relay restart) or when
//! the relay has been silent for [`ClientConfig::dead_after`] keepalives.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::core::{
    drop::{DropCounters, DropReason},
    wire::{
        self, Cipher, Header, KeyCache, Kind, Message, Reassembled, Reassembler, ReplayGuard,
        Sealer, SessionId, CAP_OFFLOAD, VNET_LEN,
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
    /// with a vnet header, an AF_PACKET socket): advertise
    /// [`CAP_OFFLOAD`] when registering.
    pub offload: bool,
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
        }
    }
}

/// What a received datagram produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent<'a> {
    /// A whole frame to deliver locally, with its offload metadata if it
    /// came as a super-frame.
    Frame(Reassembled<'a>),
    /// The relay accepted our registration (logged by the driver).
    Registered,
    /// A control message that needs nothing more.
    Nothing,
    /// The datagram was dropped; the reason is counted.
    Drop(DropReason),
}

/// Counters of a client.
#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    /// Frames sealed and sent.
    pub frames_out: u64,
    /// Frames received and delivered.
    pub frames_in: u64,
    /// Of `frames_out`: super-frames sent whole with their offload metadata.
    pub offload_frames_out: u64,
    /// Of `frames_in`: super-frames received whole with their offload metadata.
    pub offload_frames_in: u64,
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
    scratch: Vec<u8>,
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
            out: Vec::with_capacity(128),
            stats: ClientStats::default(),
        }
    }

    /// The relay's address.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Talks to the relay at a new address from now on (its name resolved
    /// elsewhere); registration starts over.
    pub fn set_relay(&mut self, relay: SocketAddr) {
        self.relay = relay;
        self.registered = false;
        self.last_sent = None;
    }

    /// True once the relay acknowledged our registration, until it is lost.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// True when frames with offload metadata may be sent as they are
    /// ([`Client::handle_offload_frame`]): we can take them, and the relay
    /// said every peer of the network can.
    pub fn offload_ok(&self) -> bool {
        self.config.offload && self.registered && self.relay_caps & CAP_OFFLOAD != 0
    }

    fn caps(&self) -> u32 {
        if self.config.offload {
            CAP_OFFLOAD
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

    /// Seals a local frame; `emit` is called with each datagram for the relay.
    // HOT PATH
    pub fn handle_frame(
        &mut self,
        frame: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DropReason> {
        self.seal(None, frame, emit)
    }

    /// Seals a local frame with its offload metadata (a raw
    /// `virtio_net_hdr`) as OffloadFrame datagrams. Only while
    /// [`Client::offload_ok`]; otherwise the caller finishes the frame
    /// (checksum, segmentation) and uses [`Client::handle_frame`].
    // HOT PATH
    pub fn handle_offload_frame(
        &mut self,
        vnet: [u8; VNET_LEN],
        frame: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DropReason> {
        self.seal(Some(vnet), frame, emit)
    }

    fn seal(
        &mut self,
        vnet: Option<[u8; VNET_LEN]>,
        frame: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DropReason> {
        let stats = &mut self.stats;
        let max = self.config.max_datagram;
        let mut counted = |d: &[u8]| {
            stats.datagrams_out += 1;
            emit(d)
        };
        let sealed = match vnet {
            Some(vnet) => {
                self.sealer
                    .seal_offload_frame(&self.cipher, vnet, frame, max, &mut counted)
            }
            None => self
                .sealer
                .seal_frame(&self.cipher, frame, max, &mut counted),
        };
        match sealed {
            Ok(_) => {
                self.stats.frames_out += 1;
                self.stats.offload_frames_out += u64::from(vnet.is_some());
                Ok(())
            }
            Err(e) => {
                let reason = e.drop_reason();
                self.stats.drops.add(reason);
                Err(reason)
            }
        }
    }

    /// Handles a datagram from `from`; `emit` sends control replies to the relay.
    // HOT PATH
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> ClientEvent<'_> {
        self.stats.datagrams_in += 1;
        if datagram.get(1) == Some(&(Kind::OffloadFrame as u8)) {
            return self.handle_offload(now, from, datagram);
        }
        let message = match self.authenticate(now, from, datagram) {
            Ok(m) => m,
            Err(reason) => {
                self.stats.drops.add(reason);
                return ClientEvent::Drop(reason);
            }
        };
        self.last_heard = Some(now);
        match message {
            Opened::Frame(session) => {
                // Borrows only `scratch` and `reassembler`, so the frame can be
                // returned without copying.
                let Ok(Message::Frame(fragment)) = Message::parse(Kind::Frame, &self.scratch)
                else {
                    self.stats.drops.add(DropReason::Malformed);
                    return ClientEvent::Drop(DropReason::Malformed);
                };
                match self.reassembler.push(now, session, &fragment) {
                    Ok(Some(frame)) => {
                        self.stats.frames_in += 1;
                        ClientEvent::Frame(frame)
                    }
                    Ok(None) => ClientEvent::Nothing,
                    Err(e) => {
                        let reason = e.drop_reason();
                        self.stats.drops.add(reason);
                        ClientEvent::Drop(reason)
                    }
                }
            }
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
                // Register at once, but not again for every frame still in
                // flight that gets the same answer.
                let recent = self
                    .last_sent
                    .is_some_and(|t| now.saturating_duration_since(t) < REGISTER_AGAIN_AFTER);
                if was_registered || !recent {
                    let caps = self.caps();
                    self.send_control(now, Message::Register { caps }, emit);
                }
                ClientEvent::Nothing
            }
        }
    }

    /// An OffloadFrame datagram: reassembled still sealed, opened whole.
    // HOT PATH
    fn handle_offload(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> ClientEvent<'_> {
        let reason = match self.push_offload(now, from, datagram) {
            Ok(None) => return ClientEvent::Nothing,
            Ok(Some((session, vnet, first))) => {
                let frame = self.reassembler.last_mut();
                match self
                    .keys
                    .open_offload_frame(&self.cipher, session, first, &vnet, frame)
                {
                    Ok(len) => {
                        self.stats.frames_in += 1;
                        self.stats.offload_frames_in += 1;
                        return ClientEvent::Frame(Reassembled {
                            vnet: Some(vnet),
                            sealed: None,
                            frame: &frame[..len],
                        });
                    }
                    Err(e) => e.drop_reason(),
                }
            }
            Err(reason) => reason,
        };
        self.stats.drops.add(reason);
        ClientEvent::Drop(reason)
    }

    /// Checks an OffloadFrame datagram (sender, replay window, relay tag)
    /// and reassembles it; returns what opens a completed frame.
    fn push_offload(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Option<(SessionId, [u8; VNET_LEN], u64)>, DropReason> {
        let (header, fragment) = self.accept(now, from, datagram, |c, d| {
            wire::open_route(&c.cipher, d).map_err(|e| e.drop_reason())
        })?;
        self.last_heard = Some(now);
        match self.reassembler.push(now, header.session, &fragment) {
            Ok(Some(Reassembled {
                vnet: Some(vnet),
                sealed: Some(first),
                ..
            })) => Ok(Some((header.session, vnet, first))),
            Ok(Some(_)) => Err(DropReason::Malformed),
            Ok(None) => Ok(None),
            Err(e) => Err(e.drop_reason()),
        }
    }

    /// The checks every datagram from the relay passes, around `open`, which
    /// authenticates it: the sender's address; the replay window before
    /// `open` (cheap) and again after it, only then recording the counter
    /// (so a datagram that fails `open` cannot move the window).
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

    /// Checks sender, replay window and tag; decrypts into `scratch`.
    fn authenticate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Opened, DropReason> {
        let (_, opened) = self.accept(now, from, datagram, |c, d| {
            let (header, message) = wire::open_cached(&c.cipher, &mut c.keys, d, &mut c.scratch)
                .map_err(|e| e.drop_reason())?;
            Ok((header, Opened::from_message(header.session, message)?))
        })?;
        Ok(opened)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::NetworkKey;

    #[test]
    fn a_burst_of_not_registered_answers_costs_one_registration() {
        let key = NetworkKey::from_bytes([9; 32]);
        let relay_addr: SocketAddr = "192.0.2.1:7171".parse().unwrap();
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
            client.handle_datagram(t1, relay_addr, &d, &mut |_| sent += 1),
            ClientEvent::Registered
        );
        // The relay restarted: every frame in flight gets NotRegistered.
        for i in 0..5 {
            relay
                .seal(&cipher, &Message::NotRegistered, &mut d)
                .unwrap();
            let now = t1 + Duration::from_millis(10 * i);
            client.handle_datagram(now, relay_addr, &d, &mut |_| sent += 1);
        }
        assert_eq!(sent, 2, "one Register for the whole burst");
        assert!(!client.is_registered());
    }

    /// Offload datagrams cut short or with a byte changed anywhere never
    /// panic, never deliver a frame, and are counted; the intact ones after
    /// them still deliver the frame.
    #[test]
    fn damaged_offload_datagrams_are_counted_drops() {
        let key = NetworkKey::from_bytes([9; 32]);
        let cipher = Cipher::new(&key);
        let relay: SocketAddr = "192.0.2.1:7171".parse().unwrap();
        let t0 = Instant::now();
        let mut frame = vec![0u8; 5000];
        frame[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        for (i, b) in frame.iter_mut().enumerate().skip(12) {
            *b = (i * 7) as u8;
        }
        let vnet = [1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0];
        let mut sender = Sealer::new(SessionId([5; 16]));
        let mut datagrams = Vec::new();
        sender
            .seal_offload_frame(&cipher, vnet, &frame, 1400, &mut |d| {
                datagrams.push(d.to_vec())
            })
            .unwrap();
        assert!(datagrams.len() > 2);
        let cipher2 = cipher.clone();
        let mut client = Client::new(ClientConfig::default(), cipher, SessionId([3; 16]), relay);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut damaged = 0u64;
        for d in &datagrams {
            for len in 0..d.len() {
                let ev = client.handle_datagram(t0, relay, &d[..len], &mut |_| {});
                assert!(matches!(ev, ClientEvent::Drop(_)), "cut to {len}: {ev:?}");
                damaged += 1;
            }
            for _ in 0..200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut bad = d.clone();
                let at = (seed as usize) % bad.len();
                bad[at] ^= 1 << (seed >> 61);
                let ev = client.handle_datagram(t0, relay, &bad, &mut |_| {});
                assert!(
                    !matches!(ev, ClientEvent::Frame(_)),
                    "byte {at} changed: {ev:?}"
                );
                damaged += 1;
            }
        }
        // A damaged chunk passes the relay tag (which covers only header and
        // route) and uses up its counter, so the originals are replays now;
        // the next frame from the sender arrives whole.
        datagrams.clear();
        sender
            .seal_offload_frame(&cipher2, vnet, &frame, 1400, &mut |d| {
                datagrams.push(d.to_vec())
            })
            .unwrap();
        let mut got = None;
        for d in &datagrams {
            if let ClientEvent::Frame(r) = client.handle_datagram(t0, relay, d, &mut |_| {}) {
                got = Some(r.vnet == Some(vnet) && r.frame == &frame[..]);
            }
        }
        assert_eq!(got, Some(true), "the next frame did not arrive intact");
        assert!(client.stats().drops.total() >= damaged - 200 * datagrams.len() as u64);
    }
}
