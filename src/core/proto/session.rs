//! Session keys after a handshake: one [`Keypair`] per finished handshake,
//! and [`Keypairs`], the current, previous and next of one session (the
//! uplink between a member and its relay, or two members).
//!
//! Invariants this file keeps:
//! - **No nonce reuse**: a keypair's send counter only grows and stops
//!   before it wraps ([`REJECT_AFTER_MESSAGES`]).
//! - **Replay**: a counter is accepted once, within the window, and the
//!   window moves only after the AEAD (or relay tag) held.
//! - **Forward secrecy**: a keypair older than its `reject_after` is
//!   refused and erased by [`Keypairs::expire`]; key bytes are overwritten
//!   when a keypair is dropped (ring's keys are dropped with it; the raw
//!   bytes we held are erased in `noise::TransportKeys`'s drop).
//! - **Key confirmation**: a responder's keypair is `next` until a datagram
//!   opens under it; only then does it send with it (WireGuard §5.4.4).

use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};

use crate::core::{
    noise::TransportKeys,
    wire::{ReplayWindow, WireError},
};

/// A keypair is replaced after this long (the initiator starts a new
/// handshake; WireGuard's `REKEY_AFTER_TIME`).
pub const REKEY_AFTER: Duration = Duration::from_secs(120);
/// A keypair is refused and erased after this long past its handshake.
pub const REJECT_AFTER: Duration = Duration::from_secs(180);
/// A keypair is replaced after this many datagrams.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// A keypair never seals more than this many datagrams.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// Length of an AEAD tag and of a relay tag.
pub const TAG_LEN: usize = 16;

const RELAY_TAG_CONTEXT: &str = "lanbridge v2 relay tag";

/// Timers of a session; tests shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Start a new handshake once the current keypair is this old.
    pub rekey_after: Duration,
    /// Refuse and erase a keypair this old.
    pub reject_after: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            rekey_after: REKEY_AFTER,
            reject_after: REJECT_AFTER,
        }
    }
}

impl Timers {
    /// Timers rekeying after `rekey_after` (at most [`REKEY_AFTER`]); a
    /// keypair is refused a minute later, and never later than
    /// [`REJECT_AFTER`].
    pub fn with_rekey_after(rekey_after: Duration) -> Timers {
        let rekey_after = rekey_after.clamp(Duration::from_secs(1), REKEY_AFTER);
        Timers {
            rekey_after,
            reject_after: (rekey_after + Duration::from_secs(60)).min(REJECT_AFTER),
        }
    }
}

fn aead_key(raw: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for ChaCha20-Poly1305.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, raw).expect("32-byte key"))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The keys of one finished handshake.
pub struct Keypair {
    /// Our index for it: the other side puts it in what it sends us.
    pub local_index: u32,
    /// The other side's index: we put it in what we send.
    pub remote_index: u32,
    /// When the handshake finished.
    pub created: Instant,
    /// True if we initiated the handshake (the initiator rekeys).
    pub initiator: bool,
    send: LessSafeKey,
    recv: LessSafeKey,
    send_tag: [u8; 32],
    recv_tag: [u8; 32],
    send_counter: u64,
    replay: ReplayWindow,
}

impl Drop for Keypair {
    fn drop(&mut self) {
        self.send_tag.fill(0);
        self.recv_tag.fill(0);
        // SAFETY-free erasure hint: keep the compiler from eliding the fills.
        std::hint::black_box(&self.send_tag);
        std::hint::black_box(&self.recv_tag);
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("send_counter", &self.send_counter)
            .finish_non_exhaustive()
    }
}

impl Keypair {
    /// The keypair of a finished handshake (`keys` is erased when dropped).
    pub fn new(
        keys: &TransportKeys,
        local_index: u32,
        remote_index: u32,
        initiator: bool,
        now: Instant,
    ) -> Keypair {
        Keypair {
            local_index,
            remote_index,
            created: now,
            initiator,
            send: aead_key(&keys.send),
            recv: aead_key(&keys.recv),
            send_tag: blake3::derive_key(RELAY_TAG_CONTEXT, &keys.send),
            recv_tag: blake3::derive_key(RELAY_TAG_CONTEXT, &keys.recv),
            send_counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    /// Time since the handshake.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// True while it may seal and open.
    pub fn usable(&self, now: Instant, timers: &Timers) -> bool {
        self.age(now) < timers.reject_after && self.send_counter < REJECT_AFTER_MESSAGES
    }

    /// True once it should be replaced (by the side that rekeys).
    pub fn wants_rekey(&self, now: Instant, timers: &Timers) -> bool {
        self.age(now) >= timers.rekey_after || self.send_counter >= REKEY_AFTER_MESSAGES
    }

    /// Takes the next send counter.
    pub fn next_counter(&mut self) -> Result<u64, WireError> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return Err(WireError::CounterExhausted);
        }
        let c = self.send_counter;
        self.send_counter += 1;
        Ok(c)
    }

    /// Encrypts `payload` in place under `counter`; returns the tag.
    pub fn seal(&self, counter: u64, aad: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), payload)
            // Only fails beyond 2^38 bytes; datagrams are < 64 KiB.
            .expect("datagram payloads are far below the AEAD's limit");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// True if `counter` would pass the replay window (changes nothing).
    pub fn fresh(&self, counter: u64) -> bool {
        self.replay.check(counter)
    }

    /// Authenticates and decrypts `payload` in place, then records
    /// `counter` in the replay window (only if it authenticated).
    pub fn open(
        &mut self,
        counter: u64,
        aad: &[u8],
        payload: &mut [u8],
        tag: &[u8],
    ) -> Result<(), WireError> {
        if !self.replay.check(counter) {
            return Err(WireError::Replayed);
        }
        let tag = Tag::try_from(tag).map_err(|_| WireError::Truncated)?;
        self.recv
            .open_in_place_separate_tag(nonce(counter), Aad::from(aad), tag, payload, 0..)
            .map_err(|_| WireError::Forged)?;
        if !self.replay.update(counter) {
            return Err(WireError::Replayed);
        }
        Ok(())
    }

    /// The relay tag of what we send: keyed BLAKE3 over `covered` and the
    /// datagram's length.
    pub fn send_tag(&self, covered: &[u8], len: usize) -> [u8; TAG_LEN] {
        relay_tag(&self.send_tag, covered, len)
    }

    /// Checks the relay tag of what we received, and its counter against the
    /// replay window; records the counter if both hold.
    pub fn check_tag(
        &mut self,
        counter: u64,
        covered: &[u8],
        len: usize,
        tag: &[u8],
    ) -> Result<(), WireError> {
        if !self.replay.check(counter) {
            return Err(WireError::Replayed);
        }
        let want = relay_tag(&self.recv_tag, covered, len);
        if !constant_time_eq(&want, tag) {
            return Err(WireError::Forged);
        }
        if !self.replay.update(counter) {
            return Err(WireError::Replayed);
        }
        Ok(())
    }
}

fn relay_tag(key: &[u8; 32], covered: &[u8], len: usize) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(covered);
    h.update(&(len as u32).to_be_bytes());
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
    tag
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which of a session's keypairs an index named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The one we send with.
    Current,
    /// The one before, still accepted until it expires.
    Previous,
    /// A responder's new keypair, not yet confirmed.
    Next,
}

/// The keypairs of one session.
///
/// Each slot is boxed: a keypair is about 1.5 KB (two ring AEAD keys of
/// 544 bytes each, the replay window), and most of the time one slot of
/// three is filled, so an empty slot costs a pointer, not a keypair. A
/// relay holds one `Keypairs` per member, a member one per other member.
#[derive(Debug, Default)]
pub struct Keypairs {
    /// Sent with; accepted.
    pub current: Option<Box<Keypair>>,
    /// Accepted until it expires.
    pub previous: Option<Box<Keypair>>,
    /// A responder's keypair, accepted; becomes current at its first
    /// datagram.
    pub next: Option<Box<Keypair>>,
}

impl Keypairs {
    /// Installs the keypair of a handshake we initiated: confirmed by the
    /// answer, so it is current at once. Returns keypairs dropped (their
    /// indexes are freed by the caller).
    ///
    /// A `next` keypair means the other side's handshake crossed ours: it
    /// sends with that one (its own initiated keypair, once our answer
    /// reaches it), so it stays accepted as `previous`, and the old current
    /// goes (WireGuard does the same).
    pub fn install_initiated(&mut self, kp: Keypair) -> Vec<u32> {
        let mut gone = Vec::new();
        let keep = match self.next.take() {
            Some(next) => {
                if let Some(old) = self.current.take() {
                    gone.push(old.local_index);
                }
                Some(next)
            }
            None => self.current.take(),
        };
        if let Some(old) = std::mem::replace(&mut self.previous, keep) {
            gone.push(old.local_index);
        }
        self.current = Some(Box::new(kp));
        gone
    }

    /// Installs a responder's keypair as `next`; returns the index of one
    /// it replaced.
    pub fn install_responded(&mut self, kp: Keypair) -> Option<u32> {
        self.next.replace(Box::new(kp)).map(|old| old.local_index)
    }

    /// The keypair with `index`, if it is one of ours.
    pub fn find(&mut self, index: u32) -> Option<(Slot, &mut Keypair)> {
        if let Some(k) = self
            .current
            .as_deref_mut()
            .filter(|k| k.local_index == index)
        {
            return Some((Slot::Current, k));
        }
        if let Some(k) = self.next.as_deref_mut().filter(|k| k.local_index == index) {
            return Some((Slot::Next, k));
        }
        if let Some(k) = self
            .previous
            .as_deref_mut()
            .filter(|k| k.local_index == index)
        {
            return Some((Slot::Previous, k));
        }
        None
    }

    /// A datagram opened under `next`: it becomes current. Returns the index
    /// of the keypair dropped on the way (the old previous).
    pub fn confirm_next(&mut self) -> Option<u32> {
        let next = self.next.take()?;
        let dropped = self.previous.take().map(|k| k.local_index);
        self.previous = self.current.replace(next);
        dropped
    }

    /// The keypair to send with, if it may still seal.
    pub fn sending(&mut self, now: Instant, timers: &Timers) -> Option<&mut Keypair> {
        self.current
            .as_deref_mut()
            .filter(|k| k.usable(now, timers))
    }

    /// Erases keypairs past `reject_after`; returns their indexes.
    pub fn expire(&mut self, now: Instant, timers: &Timers) -> Vec<u32> {
        let mut gone = Vec::new();
        for slot in [&mut self.current, &mut self.previous, &mut self.next] {
            if slot.as_ref().is_some_and(|k| !k.usable(now, timers)) {
                if let Some(k) = slot.take() {
                    gone.push(k.local_index);
                }
            }
        }
        gone
    }

    /// Erases every keypair; returns their indexes.
    pub fn clear(&mut self) -> Vec<u32> {
        [self.current.take(), self.previous.take(), self.next.take()]
            .into_iter()
            .flatten()
            .map(|k| k.local_index)
            .collect()
    }

    /// Age of the current keypair.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.current.as_ref().map(|k| k.age(now))
    }

    /// True if no keypair is left.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.previous.is_none() && self.next.is_none()
    }
}

/// A TAI64N timestamp (12 bytes: seconds since 1970 plus 2^62, big-endian,
/// then nanoseconds): what an initiation carries, so that a responder
/// refuses one not newer than the last it accepted from the same key.
pub fn tai64n(since_unix_epoch: Duration) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&(since_unix_epoch.as_secs() + (1u64 << 62)).to_be_bytes());
    t[8..].copy_from_slice(&since_unix_epoch.subsec_nanos().to_be_bytes());
    t
}

/// Wall-clock time for timestamps, as an offset from an `Instant`: the
/// engines stay sans-IO (time is passed in) and deterministic in tests.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    base: Instant,
    base_since_epoch: Duration,
}

impl WallClock {
    /// A clock that reads `since_unix_epoch` at `base`.
    pub fn new(base: Instant, since_unix_epoch: Duration) -> WallClock {
        WallClock {
            base,
            base_since_epoch: since_unix_epoch,
        }
    }

    /// The system clock, for drivers.
    pub fn system(now: Instant) -> WallClock {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        WallClock::new(now, since)
    }

    /// The TAI64N timestamp of `now`.
    pub fn tai64n(&self, now: Instant) -> [u8; 12] {
        tai64n(self.base_since_epoch + now.saturating_duration_since(self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::noise::{respond, Initiator, StaticKeys};

    /// Empty slots cost a pointer each: a relay holds one `Keypairs` per
    /// member, and inline the three slots were 4.4 KB whether filled or
    /// not (issue 13: 10 000 members in 64 MiB).
    #[test]
    fn empty_keypair_slots_cost_a_pointer_each() {
        assert_eq!(
            std::mem::size_of::<Keypairs>(),
            3 * std::mem::size_of::<usize>()
        );
        assert!(Keypairs::default().is_empty());
    }

    fn pair(now: Instant) -> (Keypair, Keypair) {
        let a = StaticKeys::generate().unwrap();
        let b = StaticKeys::generate().unwrap();
        let psk = [3; 32];
        let (init, m1) = Initiator::start(&a, &b.public, &psk, b"").unwrap();
        let r = respond(&b, &psk, &m1, |_, _| Ok(Vec::new())).unwrap();
        let (ka, _) = init.finish(&r.reply).unwrap();
        (
            Keypair::new(&ka, 1, 2, true, now),
            Keypair::new(&r.keys, 2, 1, false, now),
        )
    }

    #[test]
    fn sealed_opens_once_on_the_other_side_only() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut p = b"hello".to_vec();
        let c = a.next_counter().unwrap();
        let tag = a.seal(c, b"aad", &mut p);
        let sealed = p.clone();
        assert!(a.open(c, b"aad", &mut p.clone(), &tag).is_err(), "own key");
        b.open(c, b"aad", &mut p, &tag).unwrap();
        assert_eq!(p, b"hello");
        let mut again = sealed.clone();
        assert_eq!(
            b.open(c, b"aad", &mut again, &tag),
            Err(WireError::Replayed)
        );
        // A forged one does not move the window.
        let mut forged = sealed.clone();
        forged[0] ^= 1;
        assert_eq!(b.open(5, b"aad", &mut forged, &tag), Err(WireError::Forged));
        assert!(b.fresh(5));
        let tag = b.send_tag(b"hdr", 40);
        a.check_tag(0, b"hdr", 40, &tag).unwrap();
        assert_eq!(a.check_tag(0, b"hdr", 40, &tag), Err(WireError::Replayed));
        assert_eq!(a.check_tag(1, b"hdr", 41, &tag), Err(WireError::Forged));
    }

    #[test]
    fn keypairs_rotate_confirm_and_expire() {
        let t0 = Instant::now();
        let timers = Timers::with_rekey_after(Duration::from_secs(2));
        assert_eq!(timers.reject_after, Duration::from_secs(62));
        let mut s = Keypairs::default();
        let (a, b) = pair(t0);
        assert!(s.install_initiated(a).is_empty());
        assert_eq!(s.install_responded(b), None);
        assert!(matches!(s.find(2), Some((Slot::Next, _))));
        assert_eq!(s.confirm_next(), None);
        assert!(matches!(s.find(2), Some((Slot::Current, _))));
        assert!(matches!(s.find(1), Some((Slot::Previous, _))));
        assert!(s
            .sending(t0, &timers)
            .unwrap()
            .wants_rekey(t0 + Duration::from_secs(2), &timers));
        let gone = s.expire(t0 + Duration::from_secs(62), &timers);
        assert_eq!(gone.len(), 2);
        assert!(s.is_empty());
    }

    /// Both sides initiated at once: the other side's keypair (our `next`)
    /// is what it will send with, so finishing our own handshake keeps it.
    #[test]
    fn a_crossed_handshake_keeps_the_other_sides_keypair() {
        let t0 = Instant::now();
        let kp = |i: u32| {
            let mut k = pair(t0).0;
            k.local_index = i;
            k
        };
        let mut s = Keypairs::default();
        assert_eq!(s.install_responded(kp(7)), None);
        assert!(s.install_initiated(kp(1)).is_empty());
        assert!(matches!(s.find(1), Some((Slot::Current, _))));
        assert!(matches!(s.find(7), Some((Slot::Previous, _))));
        // Crossed rekeys: the old current goes, theirs stays.
        assert_eq!(s.install_responded(kp(8)), None);
        assert_eq!(s.install_initiated(kp(2)), [1, 7]);
        assert!(matches!(s.find(2), Some((Slot::Current, _))));
        assert!(matches!(s.find(8), Some((Slot::Previous, _))));
        assert!(s.next.is_none());
        // Without a crossing, as before: the current becomes previous.
        assert_eq!(s.install_initiated(kp(3)), [8]);
        assert!(matches!(s.find(2), Some((Slot::Previous, _))));
    }

    #[test]
    fn tai64n_orders_like_time() {
        let a = tai64n(Duration::new(1_800_000_000, 5));
        let b = tai64n(Duration::new(1_800_000_000, 6));
        let c = tai64n(Duration::new(1_800_000_001, 0));
        assert!(a < b && b < c);
    }
}
