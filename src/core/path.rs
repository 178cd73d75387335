//! The path to one member: through the relay, or direct (docs/protocol.md,
//! "Direct paths").
//!
//! Sans-IO: [`Path`] takes what happened (frames to or from the member,
//! its endpoints, pings and pongs, with `now`) and says what to send
//! ([`PathAction`]) and when the path changes ([`PathChange`]). The member
//! engine ([`crate::core::client`]) seals and sends.
//!
//! The rules, in order of what a network engineer asks:
//! - **Only members that talk.** A member we exchanged a frame with in the
//!   last [`ACTIVE_FOR`] is *active*; nothing here happens for the others,
//!   so a network of many members probes only where traffic flows.
//! - **Endpoints** (the address the relay sees for us, then our own local
//!   addresses) go to an active member through the relay when it first
//!   becomes active, when they change, and every [`ENDPOINTS_EVERY`]. The
//!   receiver answers with its own (at most once per
//!   [`ENDPOINTS_ANSWER_EVERY`]) so that both sides probe at once.
//! - **Probing.** Both sides ping every candidate address from the socket
//!   they use for the relay, every [`PROBE_FAST`] for [`PROBE_FAST_ROUNDS`]
//!   rounds after endpoints arrive, then every [`PROBE_SLOW`]: outgoing pings
//!   open the NAT mappings that let the other side's pings in. A ping from
//!   an address we did not know is a candidate too (peer-reflexive: how a
//!   member behind a port-randomising NAT is reached by one that isn't).
//! - **Confirmed before use.** Traffic moves to an address only after a
//!   pong from it answered our ping (both authenticated under the member
//!   session); a later pong with less than half the round trip moves it
//!   again (the LAN beats the internet).
//! - **Kept alive, and no more.** On the path in use we ping every
//!   [`PING_BUSY`] while we send frames (so we notice a dead path quickly:
//!   frames received prove nothing about ours arriving), every
//!   [`PING_IDLE`] otherwise (under the UDP timeout of NAT routers, 30 s on
//!   Linux); an unanswered ping is repeated every [`PING_BUSY`].
//! - **Back to the relay** when a ping has gone unanswered for
//!   [`PONG_TIMEOUT`] (so within about 3.5 s of the path dying while
//!   frames flow), or when the member has been inactive for
//!   [`ACTIVE_FOR`]. Probing resumes while it stays active.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

/// A member with a frame either way within this long is active.
pub const ACTIVE_FOR: Duration = Duration::from_secs(60);
/// We are "sending" to a member with a frame to it within this long.
pub const BUSY_FOR: Duration = Duration::from_secs(2);
/// Endpoints are sent again this often to an active member.
pub const ENDPOINTS_EVERY: Duration = Duration::from_secs(30);
/// Endpoints received are answered with ours at most this often.
pub const ENDPOINTS_ANSWER_EVERY: Duration = Duration::from_secs(1);
/// Probing interval just after endpoints arrive.
pub const PROBE_FAST: Duration = Duration::from_secs(1);
/// Rounds of probing at [`PROBE_FAST`].
pub const PROBE_FAST_ROUNDS: u32 = 5;
/// Probing interval after that, while the member stays active.
pub const PROBE_SLOW: Duration = Duration::from_secs(10);
/// Ping interval on the path in use while frames go to the member, and for
/// repeating an unanswered ping.
pub const PING_BUSY: Duration = Duration::from_secs(1);
/// Ping interval on the path in use otherwise (holds NAT mappings).
pub const PING_IDLE: Duration = Duration::from_secs(20);
/// A path whose ping has gone unanswered this long is given up.
pub const PONG_TIMEOUT: Duration = Duration::from_millis(2500);
/// Candidate addresses kept per member (from endpoints and pings).
pub const MAX_CANDIDATES: usize = 12;

/// What the member engine should send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathAction {
    /// Our endpoints, through the relay.
    Endpoints,
    /// A ping with this `tx`, directly to `addr`.
    Ping {
        /// Where to.
        addr: SocketAddr,
        /// Names the ping (its pong carries it back).
        tx: u64,
    },
}

/// How the path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathChange {
    /// Frames go directly to `addr` now.
    Direct {
        /// The member's address.
        addr: SocketAddr,
        /// Round trip of the pong that confirmed it.
        rtt: Duration,
    },
    /// Frames go through the relay again.
    Relay {
        /// Because the member has been inactive (else: the direct path
        /// stopped answering).
        idle: bool,
    },
}

#[derive(Clone, Debug)]
struct Candidate {
    addr: SocketAddr,
    /// Learned from a ping, not from endpoints (kept when endpoints
    /// change).
    reflexive: bool,
    /// Our last ping to it, unanswered.
    ping: Option<(u64, Instant)>,
}

#[derive(Clone, Debug)]
struct Direct {
    addr: SocketAddr,
    rtt: Duration,
    /// Our last ping on it (answered or not).
    ping: Option<(u64, Instant)>,
    /// When the oldest ping not answered since was sent.
    unanswered_since: Option<Instant>,
}

/// The path to one member.
#[derive(Clone, Debug, Default)]
pub struct Path {
    candidates: Vec<Candidate>,
    direct: Option<Direct>,
    changed_at: Option<Instant>,
    last_frame: Option<Instant>,
    last_sent_frame: Option<Instant>,
    /// When we last sent our endpoints, and their generation then.
    endpoints_sent: Option<(Instant, u64)>,
    /// Probing rounds done, and when the next is due.
    probe: Option<(u32, Instant)>,
    /// When fast probing last restarted for new candidates.
    fast_since: Option<Instant>,
}

impl Path {
    /// The direct address in use, if any.
    pub fn direct(&self) -> Option<SocketAddr> {
        self.direct.as_ref().map(|d| d.addr)
    }

    /// Round trip of the direct path (its last pong).
    pub fn rtt(&self) -> Option<Duration> {
        self.direct.as_ref().map(|d| d.rtt)
    }

    /// When the path last changed.
    pub fn changed_at(&self) -> Option<Instant> {
        self.changed_at
    }

    /// A frame went to the member (`sent`) or came from it.
    // HOT PATH
    pub fn on_frame(&mut self, now: Instant, sent: bool) {
        self.last_frame = Some(now);
        if sent {
            self.last_sent_frame = Some(now);
        }
    }

    fn active(&self, now: Instant) -> bool {
        self.last_frame
            .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_FOR)
    }

    /// The member's endpoints arrived (already filtered by the caller):
    /// they replace the candidates it told us before, and probing starts
    /// now if there is no direct path. True if ours (of `generation`)
    /// should go back; they count as sent, so two members never answer
    /// each other's answers.
    pub fn on_endpoints(&mut self, now: Instant, addrs: &[SocketAddr], generation: u64) -> bool {
        let fresh = addrs
            .iter()
            .any(|a| self.candidates.iter().all(|c| c.addr != *a));
        // Candidates named again keep their pings in flight.
        let mut candidates: Vec<Candidate> = addrs
            .iter()
            .map(
                |&addr| match self.candidates.iter().find(|c| c.addr == addr) {
                    Some(c) => Candidate {
                        reflexive: false,
                        ..c.clone()
                    },
                    None => Candidate {
                        addr,
                        reflexive: false,
                        ping: None,
                    },
                },
            )
            .collect();
        candidates.extend(
            self.candidates
                .iter()
                .filter(|c| c.reflexive && !addrs.contains(&c.addr))
                .cloned(),
        );
        candidates.truncate(MAX_CANDIDATES);
        self.candidates = candidates;
        if self.direct.is_none() && (fresh || self.probe.is_none()) {
            self.probe_fast(now);
        }
        let answer = self
            .endpoints_sent
            .is_none_or(|(t, _)| now.saturating_duration_since(t) >= ENDPOINTS_ANSWER_EVERY);
        if answer {
            self.endpoints_sent = Some((now, generation));
        }
        answer
    }

    /// An authenticated ping came from `from`: a candidate if it is new
    /// (peer-reflexive), probed at once when there is no direct path.
    pub fn on_ping(&mut self, now: Instant, from: SocketAddr) {
        if self.candidates.iter().all(|c| c.addr != from) && self.candidates.len() < MAX_CANDIDATES
        {
            self.candidates.push(Candidate {
                addr: from,
                reflexive: true,
                ping: None,
            });
            if self.direct.is_none() {
                self.probe_fast(now);
            }
        }
    }

    /// Probes at once and then at the fast pace, for new candidates; at
    /// most once per [`PROBE_SLOW`], so that a member naming new addresses
    /// all the time brings each at most [`PROBE_FAST_ROUNDS`] pings per
    /// [`PROBE_SLOW`] (else the slow pace goes on).
    fn probe_fast(&mut self, now: Instant) {
        if self
            .fast_since
            .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_SLOW)
        {
            self.fast_since = Some(now);
            self.probe = Some((0, now));
        } else if self.probe.is_none() {
            self.probe = Some((PROBE_FAST_ROUNDS, now));
        }
    }

    /// An authenticated pong for `tx` came from `from`.
    pub fn on_pong(&mut self, now: Instant, from: SocketAddr, tx: u64) -> Option<PathChange> {
        if let Some(d) = &mut self.direct {
            if d.addr == from && d.ping.is_some_and(|(t, _)| t == tx) {
                if let Some((_, sent)) = d.ping {
                    d.rtt = now.saturating_duration_since(sent);
                }
                d.unanswered_since = None;
                return None;
            }
        }
        let c = self
            .candidates
            .iter_mut()
            .find(|c| c.addr == from && c.ping.is_some_and(|(t, _)| t == tx))?;
        let (_, sent) = c.ping.take()?;
        let rtt = now.saturating_duration_since(sent);
        if self.direct.as_ref().is_some_and(|d| rtt * 2 >= d.rtt) {
            return None;
        }
        self.direct = Some(Direct {
            addr: from,
            rtt,
            ping: None,
            unanswered_since: None,
        });
        self.probe = None;
        self.changed(now);
        Some(PathChange::Direct { addr: from, rtt })
    }

    fn changed(&mut self, now: Instant) {
        self.changed_at = Some(now);
    }

    /// Goes back to the relay (direct paths turned off, or the member's
    /// keys are gone).
    pub fn reset(&mut self, now: Instant) -> Option<PathChange> {
        self.probe = None;
        self.direct.take().map(|_| {
            self.changed(now);
            PathChange::Relay { idle: true }
        })
    }

    /// Goes back to the relay because the direct path stopped answering;
    /// probing resumes.
    fn fall_back(&mut self, now: Instant) -> Option<PathChange> {
        self.direct.take()?;
        self.probe = Some((0, now + PROBE_FAST));
        self.changed(now);
        Some(PathChange::Relay { idle: false })
    }

    /// Runs the timers. `endpoints` is the generation of our endpoints
    /// (`None`: we know none yet); `new_tx` names each ping (it must be
    /// unguessable: a member that could guess it would answer our ping to
    /// an address of its choosing, a victim's, with a pong it seals itself
    /// and spoofs from there, and get our frames sent there); `budget` is how
    /// many pings may still go out in this round (shared by all members).
    pub fn poll(
        &mut self,
        now: Instant,
        endpoints: Option<u64>,
        new_tx: &mut dyn FnMut() -> u64,
        budget: &mut usize,
        actions: &mut Vec<PathAction>,
    ) -> Option<PathChange> {
        if !self.active(now) {
            return self.reset(now);
        }
        if let Some(generation) = endpoints {
            let due = self.endpoints_sent.is_none_or(|(t, g)| {
                g != generation || now.saturating_duration_since(t) >= ENDPOINTS_EVERY
            });
            if due {
                self.endpoints_sent = Some((now, generation));
                actions.push(PathAction::Endpoints);
                if self.direct.is_none() && self.probe.is_none() {
                    self.probe = Some((0, now));
                }
            }
        }
        let mut ping = |addr: SocketAddr| {
            *budget = budget.checked_sub(1)?;
            let tx = new_tx();
            actions.push(PathAction::Ping { addr, tx });
            Some(tx)
        };
        if let Some(d) = &mut self.direct {
            if d.unanswered_since
                .is_some_and(|t| now.saturating_duration_since(t) >= PONG_TIMEOUT)
            {
                return self.fall_back(now);
            }
            let busy = self
                .last_sent_frame
                .is_some_and(|t| now.saturating_duration_since(t) < BUSY_FOR);
            let every = if busy || d.unanswered_since.is_some() {
                PING_BUSY
            } else {
                PING_IDLE
            };
            if d.ping
                .is_none_or(|(_, t)| now.saturating_duration_since(t) >= every)
            {
                if let Some(tx) = ping(d.addr) {
                    d.ping = Some((tx, now));
                    d.unanswered_since.get_or_insert(now);
                }
            }
            return None;
        }
        let (round, due) = self.probe?;
        if now < due || self.candidates.is_empty() {
            return None;
        }
        for c in &mut self.candidates {
            if let Some(tx) = ping(c.addr) {
                c.ping = Some((tx, now));
            }
        }
        let round = round.saturating_add(1);
        let every = if round < PROBE_FAST_ROUNDS {
            PROBE_FAST
        } else {
            PROBE_SLOW
        };
        self.probe = Some((round, now + every));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn poll(p: &mut Path, now: Instant, tx: &mut u64) -> (Vec<PathAction>, Option<PathChange>) {
        let mut actions = Vec::new();
        let mut new_tx = || {
            *tx += 1;
            *tx
        };
        let change = p.poll(now, Some(1), &mut new_tx, &mut 100, &mut actions);
        (actions, change)
    }

    /// A path made direct at `t0` to `public` (a frame went to the member
    /// if `sent`, else came from it), and the last ping number used.
    fn direct_at(t0: Instant, public: SocketAddr, sent: bool) -> (Path, u64) {
        let mut p = Path::default();
        let mut tx = 0;
        p.on_frame(t0, sent);
        p.on_endpoints(t0, &[public], 1);
        let (actions, _) = poll(&mut p, t0, &mut tx);
        let (_, ptx) = pings(&actions)[0];
        p.on_pong(t0, public, ptx).unwrap();
        (p, tx)
    }

    fn pings(actions: &[PathAction]) -> Vec<(SocketAddr, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                PathAction::Ping { addr, tx } => Some((*addr, *tx)),
                PathAction::Endpoints => None,
            })
            .collect()
    }

    #[test]
    fn an_inactive_member_gets_nothing() {
        let t0 = Instant::now();
        let mut p = Path::default();
        p.on_endpoints(t0, &[addr("203.0.113.1:1")], 1);
        let (actions, change) = poll(&mut p, t0, &mut 0);
        assert!(actions.is_empty() && change.is_none());
    }

    /// Endpoints go out, candidates are probed, the first pong moves the
    /// path, a much faster one moves it again, a slower one doesn't.
    #[test]
    fn the_path_moves_only_on_a_pong() {
        let t0 = Instant::now();
        let (public, lan) = (addr("203.0.113.1:1000"), addr("192.168.1.5:1000"));
        let mut p = Path::default();
        let mut tx = 0;
        p.on_frame(t0, true);
        let (actions, _) = poll(&mut p, t0, &mut tx);
        assert_eq!(actions, vec![PathAction::Endpoints]);
        assert!(!p.on_endpoints(t0, &[public, lan], 1), "ours went just now");
        let (actions, _) = poll(&mut p, t0, &mut tx);
        let sent = pings(&actions);
        assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), [public, lan]);
        assert_eq!(p.direct(), None, "not before a pong");
        assert_eq!(p.on_pong(t0, public, 99), None, "a pong for no ping");
        let t1 = t0 + Duration::from_millis(40);
        assert_eq!(
            p.on_pong(t1, public, sent[0].1),
            Some(PathChange::Direct {
                addr: public,
                rtt: Duration::from_millis(40)
            })
        );
        let t2 = t0 + Duration::from_millis(50);
        assert_eq!(
            p.on_pong(t2, lan, sent[1].1),
            None,
            "50 ms is not half of 40"
        );
        assert_eq!(p.direct(), Some(public));
        assert_eq!(p.changed_at(), Some(t1), "changed once, at the first pong");
    }

    #[test]
    fn a_silent_direct_path_falls_back_within_pong_timeout_of_a_ping() {
        let t0 = Instant::now();
        let public = addr("203.0.113.1:1000");
        let (mut p, mut tx) = direct_at(t0, public, true);
        // Frames flow, pongs answer: pings every second, no change.
        let mut now = t0;
        for _ in 0..50 {
            now += Duration::from_millis(100);
            p.on_frame(now, true);
            let (actions, change) = poll(&mut p, now, &mut tx);
            assert_eq!(change, None);
            for (a, t) in pings(&actions) {
                assert_eq!(a, public);
                p.on_pong(now, a, t);
            }
        }
        // The path dies: nothing answers.
        let died = now;
        let fell_back = loop {
            now += Duration::from_millis(100);
            p.on_frame(now, true);
            if let (_, Some(change)) = poll(&mut p, now, &mut tx) {
                break (change, now);
            }
            assert!(now - died < Duration::from_secs(10));
        };
        assert_eq!(fell_back.0, PathChange::Relay { idle: false });
        assert!(
            fell_back.1 - died <= PING_BUSY + PONG_TIMEOUT,
            "{:?}",
            fell_back.1 - died
        );
        assert_eq!(p.direct(), None);
        // Probing goes on while frames flow.
        let later = fell_back.1 + PROBE_FAST;
        p.on_frame(later, true);
        let (actions, _) = poll(&mut p, later, &mut tx);
        assert_eq!(pings(&actions).len(), 1);
    }

    /// An idle path is pinged every PING_IDLE only; an inactive one is
    /// given up.
    #[test]
    fn idle_paths_are_kept_alive_sparingly_then_dropped() {
        let t0 = Instant::now();
        let public = addr("203.0.113.1:1000");
        let (mut p, mut tx) = direct_at(t0, public, false);
        let mut sent = 0;
        let mut now = t0;
        while now < t0 + ACTIVE_FOR - Duration::from_secs(1) {
            now += Duration::from_millis(250);
            let (actions, change) = poll(&mut p, now, &mut tx);
            assert_eq!(change, None);
            for (a, t) in pings(&actions) {
                sent += 1;
                p.on_pong(now, a, t);
            }
        }
        assert!(sent <= 3, "{sent} keepalive pings in a minute");
        let (_, change) = poll(&mut p, t0 + ACTIVE_FOR, &mut tx);
        assert_eq!(change, Some(PathChange::Relay { idle: true }));
    }

    /// Two members answering each other's endpoints stop after one answer
    /// (an answer counts as sent).
    #[test]
    fn endpoints_are_answered_once() {
        let t0 = Instant::now();
        let (mut a, mut b) = (Path::default(), Path::default());
        let mut answers = 0;
        let mut to_b = true;
        while answers < 10 {
            let p = if to_b { &mut b } else { &mut a };
            if !p.on_endpoints(t0, &[addr("203.0.113.1:1")], 1) {
                break;
            }
            answers += 1;
            to_b = !to_b;
        }
        assert_eq!(answers, 2, "each answers the first it gets, once");
    }

    /// Endpoints named again (every 30 s, or an answer crossing ours)
    /// neither lose the pings in flight nor restart fast probing.
    #[test]
    fn endpoints_named_again_keep_pings_in_flight() {
        let t0 = Instant::now();
        let public = addr("203.0.113.1:1000");
        let mut p = Path::default();
        let mut tx = 0;
        p.on_frame(t0, true);
        p.on_endpoints(t0, &[public], 1);
        let (actions, _) = poll(&mut p, t0, &mut tx);
        let (_, ptx) = pings(&actions)[0];
        let t1 = t0 + Duration::from_millis(300);
        p.on_endpoints(t1, &[public], 1);
        let (actions, _) = poll(&mut p, t1, &mut tx);
        assert!(pings(&actions).is_empty(), "no new round before PROBE_FAST");
        assert!(matches!(
            p.on_pong(t1, public, ptx),
            Some(PathChange::Direct { .. })
        ));
    }

    #[test]
    fn a_ping_from_a_new_address_makes_a_candidate_and_the_budget_holds() {
        let t0 = Instant::now();
        let mut p = Path::default();
        let mut tx = 0;
        p.on_frame(t0, true);
        for i in 0..20u16 {
            p.on_ping(t0, SocketAddr::from(([198, 51, 100, 1], 1000 + i)));
        }
        let mut actions = Vec::new();
        let mut budget = 5;
        let mut new_tx = || {
            tx += 1;
            tx
        };
        p.poll(t0, Some(1), &mut new_tx, &mut budget, &mut actions);
        assert_eq!(pings(&actions).len(), 5, "the budget caps pings");
        assert_eq!(budget, 0);
        assert_eq!(p.candidates.len(), MAX_CANDIDATES);
    }
}
