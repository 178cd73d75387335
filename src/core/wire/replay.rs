//! Anti-replay: the [`ReplayWindow`] of one keypair's counters (RFC 6479,
//! as in WireGuard).
//!
//! Invariants this file keeps:
//! - Each counter is accepted at most once, and only if it is less than
//!   [`REPLAY_WINDOW`] behind the highest accepted so far; out-of-order
//!   delivery within the window is fine.
//! - `check` changes nothing and is cheap; only `update` records. Callers
//!   update only after the datagram authenticated (`proto::session`), so
//!   forged datagrams cannot move a window.
//! - **Bounded memory**: a window is a fixed bitmap.

use super::REPLAY_WINDOW;

const WINDOW_WORDS: usize = REPLAY_WINDOW as usize / 64 + 1;

/// Anti-replay bitmap for one keypair's counters (RFC 6479, as in WireGuard).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::testkit::XorShift;

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
}
