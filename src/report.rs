//! Periodic drop summaries for the log.
//!
//! Drops are counted per reason in the cores. Logging each one would let an
//! attacker (or a broken peer) flood the log and slow the process, so the
//! drivers log each drop at `trace` only, and a summary of what changed
//! every few seconds at `info`.

use std::time::{Duration, Instant};

use tracing::info;

use crate::core::drop::{DropCounters, DropReason};

/// How often a summary is logged, at most.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Remembers the counters at the last summary.
pub struct DropReport {
    what: &'static str,
    last: DropCounters,
    at: Instant,
}

impl DropReport {
    /// Starts reporting drops of `what` (e.g. "datagrams").
    pub fn new(what: &'static str, now: Instant) -> DropReport {
        DropReport {
            what,
            last: DropCounters::default(),
            at: now,
        }
    }

    /// Logs the drops since the last summary, if any and if it is time.
    pub fn maybe_log(&mut self, now: Instant, counters: &DropCounters) {
        if now.saturating_duration_since(self.at) < SUMMARY_EVERY
            || counters.total() == self.last.total()
        {
            return;
        }
        let mut parts = Vec::new();
        for reason in DropReason::ALL {
            let n = counters.get(reason) - self.last.get(reason);
            if n > 0 {
                parts.push(format!("{reason}={n}"));
            }
        }
        info!(
            "dropped {} {} in the last {:.0?}: {}",
            counters.total() - self.last.total(),
            self.what,
            now.saturating_duration_since(self.at),
            parts.join(" ")
        );
        self.last = counters.clone();
        self.at = now;
    }
}
