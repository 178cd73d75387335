//! Counting events in fixed windows of time: the rate limits of the member
//! and the relay (handshakes answered, pongs, hints, pings, member lists).

use std::time::{Duration, Instant};

/// Events counted in the current window; a new window starts at the first
/// event after the current one ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateWindow {
    start: Option<Instant>,
    count: u32,
}

impl RateWindow {
    /// How many more of `limit` events the window of length `every` that
    /// holds `now` has room for.
    pub fn left(&mut self, now: Instant, every: Duration, limit: u32) -> u32 {
        if self
            .start
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
        {
            *self = RateWindow {
                start: Some(now),
                count: 0,
            };
        }
        limit.saturating_sub(self.count)
    }

    /// Counts `n` events in the current window.
    pub fn add(&mut self, n: u32) {
        self.count = self.count.saturating_add(n);
    }

    /// Counts one event if the window has room for it: true if it may go.
    pub fn allow(&mut self, now: Instant, every: Duration, limit: u32) -> bool {
        let room = self.left(now, every, limit) > 0;
        if room {
            self.add(1);
        }
        room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_events_per_window_then_a_new_window() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut w = RateWindow::default();
        let allowed = (0..5).filter(|_| w.allow(t0, second, 3)).count();
        assert_eq!(allowed, 3);
        assert!(!w.allow(t0 + Duration::from_millis(999), second, 3));
        assert!(w.allow(t0 + second, second, 3));
        assert_eq!(w.left(t0 + second, second, 3), 2);
        w.add(5);
        assert_eq!(w.left(t0 + second, second, 3), 0);
    }
}
