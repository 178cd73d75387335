//! The sending side: a [`Sealer`] writes the header, cuts frames into
//! fragments and seals each datagram.
//!
//! Invariants this file keeps:
//! - **No nonce reuse.** The nonce is `session id || counter`. A [`Sealer`]
//!   owns one random 128-bit [`SessionId`] and a counter that only grows; it
//!   refuses to seal ([`WireError::CounterExhausted`]) rather than wrap.
//! - **A frame goes whole or not at all**: every check (frame length,
//!   datagram limit, fragment count, the counters it needs) comes before the
//!   first fragment is emitted.
//! - No datagram is longer than `max_datagram` or [`MAX_DATAGRAM`]; the
//!   fragments of a frame carry chunks of near-equal size.
//! - **No allocation once warm**: the caller's output buffer and the
//!   sealer's scratch are reused, and the session key is derived again only
//!   when the network changes.

use std::fmt;

use super::{
    header::field, Cipher, Kind, Message, SessionId, SessionKey, WireError, FRAG_HEADER_LEN,
    HEADER_LEN, MACS_LEN, MAX_DATAGRAM, MAX_FRAGMENTS, MAX_FRAME, MIN_FRAME, OVERHEAD,
    RELAY_TAG_LEN, ROUTED_OVERHEAD, ROUTE_LEN, TAG_LEN, VERSION,
};

/// The sending side of one session: owns the session id and the counter, so
/// every nonce it uses is new.
pub struct Sealer {
    session: SessionId,
    counter: u64,
    next_frame_id: u32,
    /// Reused by [`Sealer::seal_frame`].
    scratch: Vec<u8>,
    /// The session key for the network sealed for last (a relay serving
    /// several networks derives it again when the network changes).
    key: Option<SessionKey>,
}

impl Sealer {
    /// A sealer starting at counter 0; use a fresh [`SessionId::random`] per
    /// process start.
    pub fn new(session: SessionId) -> Sealer {
        Sealer {
            session,
            counter: 0,
            next_frame_id: 0,
            scratch: Vec::new(),
            key: None,
        }
    }

    /// This sender's session id.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The counter the next datagram will carry.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Seals `msg` into `out` as one whole datagram (`out` is cleared first;
    /// its capacity is reused).
    pub fn seal(
        &mut self,
        cipher: &Cipher,
        msg: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        self.start(cipher, msg.kind(), out)?;
        msg.encode(out);
        self.finish(cipher, out)
    }

    /// Seals an already-encoded payload of the given kind into `out` (cleared
    /// first). The payload is not validated; [`Sealer::seal`] is the usual way.
    pub fn seal_raw(
        &mut self,
        cipher: &Cipher,
        kind: Kind,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        self.start(cipher, kind, out)?;
        out.extend_from_slice(plaintext);
        self.finish(cipher, out)
    }

    /// Cuts an Ethernet frame into Frame datagrams of at most `max_datagram`
    /// bytes (clamped to [`MAX_DATAGRAM`]), seals each and hands it to `emit`,
    /// in fragment order. Returns how many datagrams were emitted.
    ///
    /// Either every fragment is emitted or none: all checks happen first.
    /// Fragments carry chunks of near-equal size.
    // HOT PATH: one call per frame from the TAP or AF_PACKET socket.
    pub fn seal_frame(
        &mut self,
        cipher: &Cipher,
        frame: &[u8],
        max_datagram: usize,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, WireError> {
        self.seal_fragments(cipher, Kind::Frame, frame, max_datagram, emit)
    }

    /// [`Sealer::seal_frame`] as RoutedFrame datagrams (only for a network
    /// whose relay acknowledged [`CAP_ROUTED`](super::CAP_ROUTED)): each
    /// datagram is sealed on its own, its route in clear under a relay tag,
    /// so the relay switches it without decrypting and a lost or altered
    /// datagram costs only itself.
    // HOT PATH: one call per frame or segment.
    pub fn seal_routed_frame(
        &mut self,
        cipher: &Cipher,
        frame: &[u8],
        max_datagram: usize,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, WireError> {
        self.seal_fragments(cipher, Kind::RoutedFrame, frame, max_datagram, emit)
    }

    /// Both kinds of frame datagram: same route fields, same cut; a Frame
    /// seals them with the chunk, a RoutedFrame leaves them in clear.
    fn seal_fragments(
        &mut self,
        cipher: &Cipher,
        kind: Kind,
        frame: &[u8],
        max_datagram: usize,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, WireError> {
        check_frame(frame)?;
        let overhead = match kind {
            Kind::RoutedFrame => ROUTED_OVERHEAD,
            _ => OVERHEAD + FRAG_HEADER_LEN,
        };
        if max_datagram <= overhead {
            return Err(WireError::DatagramLimitTooSmall(max_datagram));
        }
        let room = max_datagram.min(MAX_DATAGRAM) - overhead;
        let (macs, body) = frame.split_at(MACS_LEN);
        let (count, chunk_len) = self.plan(body.len(), room)?;
        let frame_id = self.take_frame_id();
        let mut out = std::mem::take(&mut self.scratch);
        let mut chunks = body.chunks(chunk_len);
        for index in 0..count {
            let chunk = chunks.next().unwrap_or_default();
            self.start(cipher, kind, &mut out)?;
            out.extend_from_slice(&frame_id.to_be_bytes());
            out.extend_from_slice(&[index as u8, count as u8]);
            out.extend_from_slice(macs);
            out.extend_from_slice(chunk);
            if kind == Kind::RoutedFrame {
                self.finish_routed(cipher, &mut out);
            } else {
                self.finish(cipher, &mut out)?;
            }
            emit(&out);
        }
        self.scratch = out;
        Ok(count)
    }

    /// How many fragments of what size carry `body_len` bytes in chunks of
    /// at most `room`; reserves their counters' range (so a frame is never
    /// cut short) but does not use it.
    fn plan(&self, body_len: usize, room: usize) -> Result<(usize, usize), WireError> {
        let count = body_len.div_ceil(room).max(1);
        if count > MAX_FRAGMENTS {
            return Err(WireError::TooBig);
        }
        if u64::MAX - self.counter < count as u64 {
            return Err(WireError::CounterExhausted);
        }
        Ok((count, body_len.div_ceil(count).max(1)))
    }

    fn take_frame_id(&mut self) -> u32 {
        let id = self.next_frame_id;
        self.next_frame_id = self.next_frame_id.wrapping_add(1);
        id
    }

    /// The session key for `cipher`'s network, from the cache if it is there.
    fn key_for(&mut self, cipher: &Cipher) -> SessionKey {
        match self.key.take() {
            Some(k) if k.is_for(cipher, self.session) => k,
            _ => cipher.session_key(self.session),
        }
    }

    /// Writes the header for the next counter into `out` (cleared first).
    fn start(&self, cipher: &Cipher, kind: Kind, out: &mut Vec<u8>) -> Result<(), WireError> {
        // u64::MAX is never used, so `counter + 1` in `finish` cannot wrap.
        if self.counter == u64::MAX {
            return Err(WireError::CounterExhausted);
        }
        out.clear();
        out.extend_from_slice(&[VERSION, kind as u8, 0, 0]);
        out.extend_from_slice(&cipher.network_id().0);
        out.extend_from_slice(&self.session.0);
        out.extend_from_slice(&self.counter.to_be_bytes());
        Ok(())
    }

    /// Encrypts `out[HEADER_LEN + ROUTE_LEN..]` in place with header and
    /// route as associated data, appends the AEAD tag and the relay tag over
    /// header, route and length, uses up the counter. The plan checked the
    /// size.
    fn finish_routed(&mut self, cipher: &Cipher, out: &mut Vec<u8>) {
        let key = self.key_for(cipher);
        let len = out.len() + TAG_LEN + RELAY_TAG_LEN;
        let (signed, chunk) = out.split_at_mut(HEADER_LEN + ROUTE_LEN);
        let tag = key.seal_with(&signed[field::COUNTER], signed, chunk);
        let relay_tag = cipher.relay_tag(signed, len);
        self.key = Some(key);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&relay_tag);
        self.counter += 1;
    }

    /// Encrypts `out[HEADER_LEN..]` in place, appends the tag, uses up the counter.
    fn finish(&mut self, cipher: &Cipher, out: &mut Vec<u8>) -> Result<(), WireError> {
        if out.len() + TAG_LEN > MAX_DATAGRAM {
            out.clear();
            return Err(WireError::TooBig);
        }
        let key = self.key_for(cipher);
        let (header, payload) = out.split_at_mut(HEADER_LEN);
        let tag = key.seal(header, payload);
        self.key = Some(key);
        out.extend_from_slice(&tag);
        self.counter += 1;
        Ok(())
    }
}

/// Checks a frame's length before sealing.
fn check_frame(frame: &[u8]) -> Result<(), WireError> {
    if frame.len() < MIN_FRAME {
        return Err(WireError::FrameTooShort);
    }
    if frame.len() > MAX_FRAME {
        return Err(WireError::TooBig);
    }
    Ok(())
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("session", &self.session)
            .field("counter", &self.counter)
            .field("next_frame_id", &self.next_frame_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::{
        peek_header, testkit::*, NetworkKey, DEFAULT_MAX_DATAGRAM, MIN_MAX_DATAGRAM,
    };

    #[test]
    fn counter_exhaustion_refuses_to_seal() {
        let c = cipher();
        let mut sealer = Sealer::new(SESSION);
        let mut datagram = Vec::new();
        sealer.counter = u64::MAX - 1;
        sealer.seal(&c, &Message::Keepalive, &mut datagram).unwrap();
        assert_eq!(peek_header(&datagram).unwrap().counter, u64::MAX - 1);
        let err = sealer
            .seal(&c, &Message::Keepalive, &mut datagram)
            .unwrap_err();
        assert_eq!(err, WireError::CounterExhausted);
        // A two-fragment frame needs two counters: nothing is emitted.
        sealer.counter = u64::MAX - 1;
        let mut emitted = 0;
        let err = sealer.seal_frame(&c, &test_frame(1514), 1400, &mut |_| emitted += 1);
        assert_eq!((err, emitted), (Err(WireError::CounterExhausted), 0));
    }

    #[test]
    fn seal_frame_rejects_what_it_cannot_carry() {
        let c = cipher();
        let mut sealer = Sealer::new(SESSION);
        let mut emit = |_: &[u8]| panic!("nothing should be emitted");
        assert_eq!(
            sealer.seal_frame(&c, &test_frame(13), 1400, &mut emit),
            Err(WireError::FrameTooShort)
        );
        assert_eq!(
            sealer.seal_frame(&c, &test_frame(MAX_FRAME + 1), 1400, &mut emit),
            Err(WireError::TooBig)
        );
        assert_eq!(
            sealer.seal_frame(&c, &test_frame(60), MIN_MAX_DATAGRAM - 1, &mut emit),
            Err(WireError::DatagramLimitTooSmall(MIN_MAX_DATAGRAM - 1))
        );
        // 256 fragments of one byte each.
        assert_eq!(
            sealer.seal_frame(&c, &test_frame(MACS_LEN + 256), MIN_MAX_DATAGRAM, &mut emit),
            Err(WireError::TooBig)
        );
        assert_eq!(sealer.counter(), 0);
        let n = sealer.seal_frame(
            &c,
            &test_frame(MACS_LEN + 255),
            MIN_MAX_DATAGRAM,
            &mut |d| assert_eq!(d.len(), MIN_MAX_DATAGRAM),
        );
        assert_eq!(n, Ok(255));
        // The largest frame fits a datagram limit above the UDP maximum.
        let n = sealer.seal_frame(&c, &test_frame(MAX_FRAME), usize::MAX, &mut |d| {
            assert!(d.len() <= MAX_DATAGRAM)
        });
        assert_eq!(n, Ok(2));
    }

    #[test]
    fn default_datagram_size_carries_full_ethernet_frame_in_two() {
        let mut sealer = Sealer::new(SESSION);
        let datagrams = fragments(&mut sealer, &test_frame(1514), DEFAULT_MAX_DATAGRAM);
        assert_eq!(datagrams.len(), 2);
        assert_eq!(datagrams[0].len(), OVERHEAD + FRAG_HEADER_LEN + 751);
        // Chunks are cut evenly.
        assert_eq!(datagrams[0].len() - datagrams[1].len(), 0);
    }

    #[test]
    fn sealing_reuses_buffers_once_warm() {
        let c = cipher();
        let mut sealer = Sealer::new(SESSION);
        let mut out = Vec::with_capacity(2048);
        let ptr = out.as_ptr();
        for caps in 0..100 {
            sealer
                .seal(&c, &Message::Register { caps }, &mut out)
                .unwrap();
        }
        assert_eq!(out.as_ptr(), ptr);
        let frame = test_frame(1514);
        sealer.seal_frame(&c, &frame, 1400, &mut |_| ()).unwrap();
        let (scratch_ptr, cap) = (sealer.scratch.as_ptr(), sealer.scratch.capacity());
        for _ in 0..100 {
            sealer.seal_frame(&c, &frame, 1400, &mut |_| ()).unwrap();
        }
        assert_eq!(
            (sealer.scratch.as_ptr(), sealer.scratch.capacity()),
            (scratch_ptr, cap)
        );
        assert!(!format!("{sealer:?}").contains("scratch"));
    }

    /// One line per header field, then the sealed payload and tag, so any
    /// format or key-derivation change shows up in review.
    fn annotated_dump(d: &[u8]) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let tag_at = d.len() - TAG_LEN;
        [
            ("version", &d[0..1]),
            ("kind", &d[1..2]),
            ("flags", &d[field::FLAGS]),
            ("network_id", &d[field::NETWORK_ID]),
            ("session", &d[field::SESSION]),
            ("counter", &d[field::COUNTER]),
            ("ciphertext", &d[HEADER_LEN..tag_at]),
            ("tag", &d[tag_at..]),
        ]
        .iter()
        .map(|(name, bytes)| format!("{name:<10} {}\n", hex(bytes)))
        .collect()
    }

    #[test]
    fn register_datagram_bytes() {
        let key = NetworkKey::parse(&"00112233445566778899aabbccddeeff".repeat(2)).unwrap();
        let mut sealer = Sealer::new(SessionId(std::array::from_fn(|i| 0xa0 + i as u8)));
        sealer.counter = 5;
        let mut d = Vec::new();
        sealer
            .seal(&Cipher::new(&key), &Message::Register { caps: 0 }, &mut d)
            .unwrap();
        insta::assert_snapshot!(annotated_dump(&d), @r"
        version    01
        kind       01
        flags      0000
        network_id 4a3d7748e8dcf3e7
        session    a0a1a2a3a4a5a6a7a8a9aaabacadaeaf
        counter    0000000000000005
        ciphertext cb100c5f
        tag        1709d89898bf5b02342758e3d50058f3
        ");
    }

    /// The RoutedFrame worked example of docs/protocol.md, byte for byte.
    #[test]
    fn routed_frame_datagram_bytes() {
        let key = NetworkKey::parse(&"00112233445566778899aabbccddeeff".repeat(2)).unwrap();
        let mut sealer = Sealer::new(SessionId(std::array::from_fn(|i| 0xa0 + i as u8)));
        sealer.counter = 5;
        sealer.next_frame_id = 9;
        // dst ff:ff:ff:ff:ff:ff, src 02:00:00:00:00:01, EtherType 0x88b5, "hi".
        let frame = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x88, 0xb5, b'h', b'i',
        ];
        let mut d = Vec::new();
        sealer
            .seal_routed_frame(&Cipher::new(&key), &frame, 1400, &mut |x| d = x.to_vec())
            .unwrap();
        let n = d.len();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let dump: String = [
            ("version", &d[0..1]),
            ("kind", &d[1..2]),
            ("flags", &d[field::FLAGS]),
            ("network_id", &d[field::NETWORK_ID]),
            ("session", &d[field::SESSION]),
            ("counter", &d[field::COUNTER]),
            ("frame_id", &d[36..40]),
            ("index", &d[40..41]),
            ("count", &d[41..42]),
            ("dst", &d[42..48]),
            ("src", &d[48..54]),
            ("ciphertext", &d[54..n - 32]),
            ("aead_tag", &d[n - 32..n - 16]),
            ("relay_tag", &d[n - 16..]),
        ]
        .iter()
        .map(|(name, bytes)| format!("{name:<10} {}\n", hex(bytes)))
        .collect();
        insta::assert_snapshot!(dump);
        // The AEAD part is XChaCha20-Poly1305 (the reference crate) over the
        // chunk, with header and route as associated data, and the relay
        // tag a keyed BLAKE3 of the same 54 bytes.
        use chacha20poly1305::{
            aead::{AeadInPlace, KeyInit},
            XChaCha20Poly1305, XNonce,
        };
        let reference = XChaCha20Poly1305::new((&key.aead_key()).into());
        let mut chunk = frame[12..].to_vec();
        let tag = reference
            .encrypt_in_place_detached(XNonce::from_slice(&d[12..36]), &d[..54], &mut chunk)
            .unwrap();
        assert_eq!(&d[54..n - 32], &chunk[..]);
        assert_eq!(&d[n - 32..n - 16], &tag[..]);
        let relay_key = key.relay_key();
        let signed = [&d[..54], &(n as u32).to_be_bytes()[..]].concat();
        assert_eq!(
            &d[n - 16..],
            &blake3::keyed_hash(&relay_key, &signed).as_bytes()[..16]
        );
    }
}
