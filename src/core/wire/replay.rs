//! Anti-replay: a [`ReplayWindow`] per session (RFC 6479, as in WireGuard)
//! and a [`ReplayGuard`] over many sessions.
//!
//! Invariants this file keeps:
//! - Each counter is accepted at most once, and only if it is less than
//!   [`REPLAY_WINDOW`] behind the highest accepted so far; out-of-order
//!   delivery within the window is fine.
//! - `check` changes nothing and is cheap; only `update` records. Callers
//!   update only after [`open`](fn@super::open) succeeded, so forged datagrams
//!   cannot move a window.
//! - **Bounded memory**: a window is a fixed bitmap; a guard holds at most
//!   `cap` sessions and evicts the least recently seen. A forgotten
//!   session's old datagrams would be accepted again, so keep sessions at
//!   least as long as their peers are kept (see `docs/protocol.md`).

use std::time::{Duration, Instant};

use super::{SessionId, REPLAY_WINDOW};
use crate::core::fasthash::FastMap;

const WINDOW_WORDS: usize = REPLAY_WINDOW as usize / 64 + 1;

/// Anti-replay bitmap for one session's counters (RFC 6479, as in WireGuard).
///
/// Accepts each counter at most once, and only if it is above
/// `highest - REPLAY_WINDOW`, where `highest` is the largest counter accepted
/// so far. Out-of-order delivery within the window is fine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    /// Ring of 64-bit blocks; one spare block so a full window always fits.
    bitmap: [u64; WINDOW_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    /// A window that has seen nothing.
    pub fn new() -> ReplayWindow {
        ReplayWindow {
            highest: 0,
            bitmap: [0; WINDOW_WORDS],
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        (
            (counter / 64) as usize % WINDOW_WORDS,
            1u64 << (counter % 64),
        )
    }

    /// True if `counter` would be accepted; changes nothing.
    pub fn check(&self, counter: u64) -> bool {
        if counter > self.highest {
            return true;
        }
        if self.highest - counter >= REPLAY_WINDOW {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.bitmap[word] & bit == 0
    }

    /// Accepts and records `counter` if [`ReplayWindow::check`] allows it;
    /// returns whether it did.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter > self.highest {
            let current = self.highest / 64;
            let new = counter / 64;
            let stale = (new - current).min(WINDOW_WORDS as u64);
            for block in current + 1..=current + stale {
                self.bitmap[block as usize % WINDOW_WORDS] = 0;
            }
            self.highest = counter;
        }
        let (word, bit) = Self::slot(counter);
        self.bitmap[word] |= bit;
        true
    }
}

/// Replay windows for many sessions, bounded.
///
/// Holds at most `cap` sessions; making room evicts the least recently seen.
/// A forgotten session's old datagrams would be accepted again, so keep
/// sessions at least as long as their peers are kept (see `docs/protocol.md`).
#[derive(Clone, Debug)]
pub struct ReplayGuard {
    sessions: FastMap<SessionId, (ReplayWindow, Instant)>,
    cap: usize,
}

impl ReplayGuard {
    /// A guard for at most `cap` sessions (at least one).
    pub fn new(cap: usize) -> ReplayGuard {
        ReplayGuard {
            sessions: FastMap::default(),
            cap: cap.max(1),
        }
    }

    /// How many sessions are tracked.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True if no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// True if `counter` from `session` would be accepted (an unknown session
    /// accepts anything). Cheap; call before [`open`](fn@super::open).
    pub fn check(&self, session: SessionId, counter: u64) -> bool {
        self.sessions
            .get(&session)
            .is_none_or(|(w, _)| w.check(counter))
    }

    /// Records `counter` from `session` at `now`; false if it was replayed.
    /// Call only after [`open`](fn@super::open) verified the datagram.
    /// Evicting to make room for a new session scans all sessions (new
    /// sessions are rare, and only authenticated senders can create them).
    pub fn update(&mut self, now: Instant, session: SessionId, counter: u64) -> bool {
        if !self.sessions.contains_key(&session) && self.sessions.len() >= self.cap {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(s, _)| *s);
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        let (window, seen) = self
            .sessions
            .entry(session)
            .or_insert((ReplayWindow::new(), now));
        if !window.update(counter) {
            return false;
        }
        *seen = now;
        true
    }

    /// Forgets sessions not seen for `max_age` or longer; returns how many.
    pub fn expire(&mut self, now: Instant, max_age: Duration) -> usize {
        let before = self.sessions.len();
        self.sessions
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < max_age);
        before - self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        drop::DropReason,
        wire::{open, peek_header, testkit::*, Message, Sealer, WireError},
    };

    #[test]
    fn replay_window_accepts_each_counter_once() {
        let mut w = ReplayWindow::new();
        assert!(w.check(0));
        assert!(w.update(0));
        assert!(!w.check(0));
        assert!(!w.update(0));
        assert!(w.update(5));
        // Out of order within the window: accepted once.
        for c in [3, 1, 4, 2] {
            assert!(w.update(c), "{c}");
            assert!(!w.update(c), "{c} again");
        }
        assert!(!w.update(5));
    }

    #[test]
    fn replay_window_rejects_counters_behind_it() {
        let mut w = ReplayWindow::new();
        assert!(w.update(10_000));
        assert!(!w.check(10_000 - REPLAY_WINDOW));
        assert!(w.check(10_000 - REPLAY_WINDOW + 1));
        assert!(w.update(10_000 - REPLAY_WINDOW + 1));
        assert!(!w.update(0));
        // Every counter in the window, in reverse, exactly once.
        let mut w = ReplayWindow::new();
        let top = 5 * REPLAY_WINDOW + 17;
        assert!(w.update(top));
        for c in (top - REPLAY_WINDOW + 1..top).rev() {
            assert!(w.update(c), "{c}");
        }
        for c in top - REPLAY_WINDOW - 64..=top {
            assert!(!w.check(c), "{c}");
        }
        // Jumping far ahead clears the bitmap.
        assert!(w.update(top + 100 * REPLAY_WINDOW));
        assert!(w.update(top + 100 * REPLAY_WINDOW - 1));
        assert!(!w.update(top));
    }

    #[test]
    fn replay_window_agrees_with_a_model() {
        let mut rng = XorShift(0x1234_5678);
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::HashSet::new();
        let mut highest = 0u64;
        let mut base = 0u64;
        for _ in 0..50_000 {
            base += rng.below(40) as u64;
            let c = (base + rng.below(3000) as u64).saturating_sub(2500);
            let expected = (seen.is_empty() || c > highest || highest - c < REPLAY_WINDOW)
                && !seen.contains(&c);
            assert_eq!(w.check(c), expected, "check {c}, highest {highest}");
            assert_eq!(w.update(c), expected, "update {c}");
            if expected {
                seen.insert(c);
                highest = highest.max(c);
            }
        }
    }

    #[test]
    fn replay_guard_tracks_sessions_and_evicts_least_recent() {
        let t0 = Instant::now();
        let s = |n: u8| SessionId([n; 16]);
        let mut g = ReplayGuard::new(2);
        assert!(g.check(s(1), 0));
        assert!(g.update(t0, s(1), 0));
        assert!(!g.check(s(1), 0));
        assert!(!g.update(t0, s(1), 0));
        assert!(g.update(t0 + Duration::from_secs(1), s(2), 0));
        assert!(g.update(t0 + Duration::from_secs(2), s(1), 1));
        // Full: s(2) is the least recently seen and goes.
        assert!(g.update(t0 + Duration::from_secs(3), s(3), 0));
        assert_eq!(g.len(), 2);
        assert!(g.check(s(2), 0), "evicted session starts afresh");
        assert!(!g.check(s(1), 1));
        assert_eq!(
            g.expire(t0 + Duration::from_secs(5), Duration::from_secs(3)),
            1
        );
        assert!(g.check(s(1), 1));
        assert!(!g.check(s(3), 0));
        assert_eq!(
            g.expire(t0 + Duration::from_secs(6), Duration::from_secs(3)),
            1
        );
        assert!(g.is_empty());
    }

    #[test]
    fn replay_guard_in_front_of_open() {
        let c = cipher();
        let mut sealer = Sealer::new(SESSION);
        let (mut datagram, mut scratch) = (Vec::new(), Vec::new());
        sealer.seal(&c, &Message::Keepalive, &mut datagram).unwrap();
        let mut g = ReplayGuard::new(16);
        let now = Instant::now();
        let mut receive = |d: &[u8]| -> Result<(), WireError> {
            let h = peek_header(d)?;
            if !g.check(h.session, h.counter) {
                return Err(WireError::Replayed);
            }
            let (h, _) = open(&c, d, &mut scratch)?;
            g.update(now, h.session, h.counter)
                .then_some(())
                .ok_or(WireError::Replayed)
        };
        let mut forged = datagram.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(receive(&forged), Err(WireError::Forged));
        assert_eq!(
            receive(&datagram),
            Ok(()),
            "a forgery did not move the window"
        );
        assert_eq!(receive(&datagram), Err(WireError::Replayed));
        assert_eq!(WireError::Replayed.drop_reason(), DropReason::Replayed);
    }
}
