//! Reassembly: a [`Reassembler`] puts fragmented frames back together, per
//! (sender, frame id); the sender is a [`SessionId`] (a member's id, to a
//! member's client).
//!
//! Invariants this file keeps:
//! - **Bounded memory**: at most `max_pending` frames in progress, each of at
//!   most [`MAX_FRAME`] bytes and for at most `max_age`; making room drops
//!   the oldest pending frame and says so ([`WireError::ReassemblyOverflow`]).
//! - A frame comes out once every index of it arrived, in any order.
//!   Duplicates of a pending frame's fragments are ignored; a fragment that
//!   disagrees with earlier ones (count, MACs) drops its frame.
//! - Single-fragment frames never enter pending state and are not copied;
//!   buffers are recycled, so the hot path does not allocate once warm.
//! - Only authentic fragments belong here; stopping a duplicate of a frame
//!   already completed is the replay window's job.

use std::time::{Duration, Instant};

use super::{Fragment, SessionId, WireError, MACS_LEN, MAX_FRAME};

/// A whole frame out of [`Reassembler::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reassembled<'a> {
    /// The Ethernet frame.
    pub frame: &'a [u8],
}

/// One frame being reassembled.
#[derive(Debug)]
struct Pending {
    session: SessionId,
    frame_id: u32,
    count: u8,
    received: u8,
    macs: [u8; MACS_LEN],
    started: Instant,
    /// Bit `i` set once fragment `i` arrived.
    seen: [u64; 4],
    /// The two MACs, then the chunks in arrival order: the whole frame
    /// already when they arrived in order (the usual case).
    data: Vec<u8>,
    /// Per fragment index: (start, len) in `data`.
    spans: Vec<(usize, usize)>,
}

impl Pending {
    fn empty(now: Instant) -> Pending {
        Pending {
            session: SessionId([0; 16]),
            frame_id: 0,
            count: 0,
            received: 0,
            macs: [0; MACS_LEN],
            started: now,
            seen: [0; 4],
            data: Vec::new(),
            spans: Vec::new(),
        }
    }
}

/// Default for [`Reassembler::new`]'s `max_age`.
pub const DEFAULT_REASSEMBLY_AGE: Duration = Duration::from_secs(2);
/// Default for [`Reassembler::new`]'s `max_pending`.
pub const DEFAULT_MAX_PENDING: usize = 64;

/// Puts fragmented frames back together, per (sender, frame id).
///
/// Bounded: at most `max_pending` frames in progress (memory at most
/// `max_pending * MAX_FRAME` bytes), each for at most `max_age`. Buffers are
/// recycled. Single-fragment frames never enter pending state.
#[derive(Debug)]
pub struct Reassembler {
    max_pending: usize,
    max_age: Duration,
    pending: Vec<Pending>,
    free: Vec<Pending>,
    out: Vec<u8>,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(DEFAULT_MAX_PENDING, DEFAULT_REASSEMBLY_AGE)
    }
}

impl Reassembler {
    /// A reassembler holding at most `max_pending` (at least one) frames in
    /// progress, each for at most `max_age`.
    pub fn new(max_pending: usize, max_age: Duration) -> Reassembler {
        Reassembler {
            max_pending: max_pending.max(1),
            max_age,
            pending: Vec::new(),
            free: Vec::new(),
            out: Vec::new(),
        }
    }

    /// How many frames are in progress.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// When [`Reassembler::expire`] next has work, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.started + self.max_age).min()
    }

    /// Adds a fragment from sender `session`; returns the whole frame once
    /// its last fragment arrived (in any order). Duplicate fragments of a
    /// pending frame are ignored; a single-fragment frame is returned as is,
    /// without copying, every time it is pushed (the replay window stops
    /// duplicates).
    ///
    /// Errors: `Malformed` if the fragment disagrees with earlier ones (count
    /// or MACs; the frame is dropped), `TooBig` if the frame would exceed
    /// [`MAX_FRAME`] (dropped), `ReassemblyOverflow` if the oldest pending
    /// frame was dropped to make room — this fragment was still kept.
    // HOT PATH: every fragment a member receives.
    pub fn push<'s>(
        &'s mut self,
        now: Instant,
        session: SessionId,
        frag: &Fragment<'s>,
    ) -> Result<Option<Reassembled<'s>>, WireError> {
        if let Some(frame) = frag.as_whole_frame() {
            return Ok(Some(Reassembled { frame }));
        }
        let found = self
            .pending
            .iter()
            .position(|p| p.frame_id == frag.frame_id() && p.session == session);
        let mut overflow = false;
        let at = match found {
            Some(at) => at,
            None => {
                if self.pending.len() >= self.max_pending {
                    let oldest = (0..self.pending.len()).min_by_key(|&i| self.pending[i].started);
                    if let Some(oldest) = oldest {
                        self.recycle(oldest);
                        overflow = true;
                    }
                }
                let mut p = self.free.pop().unwrap_or_else(|| Pending::empty(now));
                p.session = session;
                p.frame_id = frag.frame_id();
                p.count = frag.count();
                p.received = 0;
                p.macs.copy_from_slice(&frag.macs_and_chunk[..MACS_LEN]);
                p.started = now;
                p.seen = [0; 4];
                p.data.clear();
                p.data.extend_from_slice(&p.macs);
                p.spans.clear();
                p.spans.resize(frag.count() as usize, (0, 0));
                self.pending.push(p);
                self.pending.len() - 1
            }
        };
        let p = &mut self.pending[at];
        if p.count != frag.count() || p.macs[..] != frag.macs_and_chunk[..MACS_LEN] {
            self.recycle(at);
            return Err(WireError::Malformed(
                "fragment disagrees with earlier fragments",
            ));
        }
        let (word, bit) = (frag.index() as usize / 64, 1u64 << (frag.index() % 64));
        if p.seen[word] & bit != 0 {
            return if overflow {
                Err(WireError::ReassemblyOverflow)
            } else {
                Ok(None)
            };
        }
        let chunk = frag.chunk();
        if p.data.len() + chunk.len() > MAX_FRAME {
            self.recycle(at);
            return Err(WireError::TooBig);
        }
        p.seen[word] |= bit;
        p.received += 1;
        p.spans[frag.index() as usize] = (p.data.len(), chunk.len());
        p.data.extend_from_slice(chunk);
        if p.received < p.count {
            return if overflow {
                Err(WireError::ReassemblyOverflow)
            } else {
                Ok(None)
            };
        }
        let mut done = self.pending.swap_remove(at);
        let mut next = MACS_LEN;
        let in_order = done.spans.iter().all(|&(start, len)| {
            let ok = start == next;
            next += len;
            ok
        });
        if in_order {
            // `data` is the frame: hand it over, keep `out`'s buffer for reuse.
            std::mem::swap(&mut self.out, &mut done.data);
        } else {
            self.out.clear();
            self.out.extend_from_slice(&done.macs);
            for &(start, len) in &done.spans {
                self.out.extend_from_slice(&done.data[start..start + len]);
            }
        }
        self.free.push(done);
        Ok(Some(Reassembled { frame: &self.out }))
    }

    /// Drops frames that have been pending for `max_age` or longer; returns
    /// how many (count each as
    /// [`DropReason::ReassemblyTimeout`](crate::core::drop::DropReason::ReassemblyTimeout)).
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.pending.len() {
            if now.saturating_duration_since(self.pending[i].started) >= self.max_age {
                self.recycle(i);
                dropped += 1;
            } else {
                i += 1;
            }
        }
        dropped
    }

    fn recycle(&mut self, at: usize) {
        let p = self.pending.swap_remove(at);
        // Keep a bounded pool; buffers of frames beyond it are freed.
        if self.free.len() < self.max_pending {
            self.free.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        drop::DropReason,
        proto::codec::DATA_OVERHEAD,
        wire::{testkit::*, FRAG_HEADER_LEN},
    };

    /// Parses each fragment plaintext and pushes it as `session`'s; returns
    /// the frames completed.
    fn reassemble(
        r: &mut Reassembler,
        now: Instant,
        session: SessionId,
        fragments: &[Vec<u8>],
    ) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for p in fragments {
            let frag = Fragment::parse(p).unwrap();
            if let Some(frame) = r.push(now, session, &frag).unwrap() {
                frames.push(frame.frame.to_vec());
            }
        }
        frames
    }

    /// A member's chunk room at the default datagram size.
    const ROOM: usize = 1400 - DATA_OVERHEAD;

    #[test]
    fn frames_fragment_and_reassemble() {
        let now = Instant::now();
        let mut frame_id = 0;
        for max_datagram in [1400, 1472] {
            let room = max_datagram - DATA_OVERHEAD;
            let mut r = Reassembler::default();
            // 1326/1327 and 1398/1399: the most one datagram carries at
            // 1400 and 1472, and one byte more.
            for len in [14, 15, 60, 1326, 1327, 1398, 1399, 1514, 9000, 65549] {
                let frame = test_frame(len);
                let datagrams = fragments(&frame, room, frame_id);
                frame_id += 1;
                assert_eq!(
                    datagrams.len(),
                    (len - MACS_LEN).div_ceil(room).max(1),
                    "{len}"
                );
                for p in &datagrams {
                    // The Data datagram it makes fits max_datagram.
                    let d = p.len() + DATA_OVERHEAD - FRAG_HEADER_LEN;
                    assert!(d <= max_datagram, "{len}: {d} > {max_datagram}");
                }
                let ctx = format!("len {len}, max {max_datagram}");
                assert_eq!(
                    reassemble(&mut r, now, SESSION, &datagrams),
                    std::slice::from_ref(&frame),
                    "{ctx}"
                );

                // Cut again (a new frame id), reversed, every fragment twice.
                let mut datagrams = fragments(&frame, room, frame_id);
                frame_id += 1;
                datagrams.reverse();
                // Every fragment but the completing one twice (a duplicate
                // after completion would start a new frame: stopping that is
                // the replay window's job).
                let mut doubled: Vec<_> = datagrams
                    .iter()
                    .flat_map(|d| [d.clone(), d.clone()])
                    .collect();
                doubled.pop();
                assert_eq!(
                    reassemble(&mut r, now, SESSION, &doubled),
                    std::slice::from_ref(&frame),
                    "{ctx} reversed"
                );

                // Shuffled.
                let mut datagrams = fragments(&frame, room, frame_id);
                frame_id += 1;
                let mut rng = XorShift(len as u64 + 1);
                for i in (1..datagrams.len()).rev() {
                    datagrams.swap(i, rng.below(i + 1));
                }
                assert_eq!(
                    reassemble(&mut r, now, SESSION, &datagrams),
                    [frame],
                    "{ctx} shuffled"
                );
                assert_eq!(r.pending(), 0);
            }
        }
    }

    #[test]
    fn interleaved_frames_from_two_sessions_reassemble() {
        let now = Instant::now();
        let (a, b) = (SessionId([1; 16]), SessionId([2; 16]));
        let (fa, fb) = (test_frame(3000), test_frame(3500));
        // The same frame id from both senders.
        let da = fragments(&fa, ROOM, 0);
        let db = fragments(&fb, ROOM, 0);
        assert_eq!((da.len(), db.len()), (3, 3));
        let mut r = Reassembler::default();
        let mut frames = Vec::new();
        for (x, y) in da.iter().zip(&db) {
            frames.extend(reassemble(&mut r, now, a, std::slice::from_ref(x)));
            frames.extend(reassemble(&mut r, now, b, std::slice::from_ref(y)));
        }
        assert_eq!(frames, [fa, fb]);
    }

    #[test]
    fn missing_fragment_expires_and_is_counted() {
        let t0 = Instant::now();
        let datagrams = fragments(&test_frame(4000), ROOM, 0);
        let mut r = Reassembler::new(8, Duration::from_secs(2));
        assert_eq!(r.next_deadline(), None);
        assert!(reassemble(&mut r, t0, SESSION, &datagrams[1..]).is_empty());
        assert_eq!(r.pending(), 1);
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(r.expire(t0 + Duration::from_millis(1999)), 0);
        assert_eq!(r.expire(t0 + Duration::from_secs(2)), 1);
        assert_eq!(r.pending(), 0);
        // The late fragment starts a new frame that never completes.
        assert!(reassemble(&mut r, t0, SESSION, &datagrams[..1]).is_empty());
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn full_reassembler_drops_oldest_and_says_so() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(2, Duration::from_secs(2));
        let firsts: Vec<_> = (0..3)
            .map(|frame_id| fragments(&test_frame(3000), ROOM, frame_id))
            .collect();
        let push = |r: &mut Reassembler, at: u64, p: &[u8]| {
            let f = Fragment::parse(p).unwrap();
            r.push(t0 + Duration::from_secs(at), SESSION, &f)
                .map(|o| o.map(|x| x.frame.to_vec()))
        };
        assert_eq!(push(&mut r, 0, &firsts[0][0]), Ok(None));
        assert_eq!(push(&mut r, 1, &firsts[1][0]), Ok(None));
        let err = push(&mut r, 1, &firsts[2][0]).unwrap_err();
        assert_eq!(err.drop_reason(), DropReason::ReassemblyOverflow);
        assert_eq!(r.pending(), 2);
        // Frame 0 was dropped; 1 and 2 still complete.
        for p in &firsts[1][1..] {
            push(&mut r, 1, p).unwrap();
        }
        let mut last = None;
        for p in &firsts[2][1..] {
            last = push(&mut r, 1, p).unwrap();
        }
        assert_eq!(last, Some(test_frame(3000)));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn inconsistent_fragments_are_malformed() {
        let now = Instant::now();
        let session = SESSION;
        let mut r = Reassembler::default();
        let payload = |index: u8, count: u8, src: u8| {
            let mut p = vec![0, 0, 0, 9, index, count];
            p.extend_from_slice(&DST);
            p.extend_from_slice(&[0x02, 0, 0, 0, 0, src]);
            p.extend_from_slice(b"xyz");
            p
        };
        let (a, b, c) = (payload(0, 3, 1), payload(1, 4, 1), payload(1, 3, 9));
        assert_eq!(
            r.push(now, session, &Fragment::parse(&a).unwrap()),
            Ok(None)
        );
        let err = r
            .push(now, session, &Fragment::parse(&b).unwrap())
            .unwrap_err();
        assert!(matches!(err, WireError::Malformed(_)), "{err:?}");
        assert_eq!(r.pending(), 0, "the inconsistent frame is dropped");
        assert_eq!(
            r.push(now, session, &Fragment::parse(&a).unwrap()),
            Ok(None)
        );
        let err = r
            .push(now, session, &Fragment::parse(&c).unwrap())
            .unwrap_err();
        assert!(matches!(err, WireError::Malformed(_)), "{err:?}");
        // The same frame id from another session is another frame.
        assert_eq!(
            r.push(now, session, &Fragment::parse(&a).unwrap()),
            Ok(None)
        );
        assert_eq!(
            r.push(now, SessionId([1; 16]), &Fragment::parse(&b).unwrap()),
            Ok(None)
        );
        assert_eq!(r.pending(), 2);
    }

    #[test]
    fn reassembly_stops_at_max_frame() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        let chunk = vec![0u8; 40_000];
        let mut pushed = Vec::new();
        for index in 0..2u8 {
            let mut p = vec![0, 0, 0, 1, index, 3];
            p.extend_from_slice(&DST);
            p.extend_from_slice(&SRC);
            p.extend_from_slice(&chunk);
            pushed.push(
                r.push(now, SESSION, &Fragment::parse(&p).unwrap())
                    .map(|o| o.is_some()),
            );
        }
        assert_eq!(pushed, [Ok(false), Err(WireError::TooBig)]);
        assert_eq!(r.pending(), 0);
    }

    /// Random fragment plaintexts (few frame ids, two senders, mostly the
    /// same MACs, so they complete frames, meet pending ones and disagree
    /// with them) never panic.
    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut r = Reassembler::new(4, Duration::from_secs(2));
        let mut buf = Vec::new();
        let t0 = Instant::now();
        for round in 0..20_000u64 {
            buf.resize(rng.below(200), 0);
            rng.fill(&mut buf);
            if buf.len() >= 6 {
                buf[..3].fill(0);
                buf[3] = rng.below(8) as u8;
                buf[4] = rng.below(4) as u8;
                buf[5] = rng.below(4) as u8;
            }
            if buf.len() >= FRAG_HEADER_LEN && rng.below(4) != 0 {
                buf[6..12].copy_from_slice(&DST);
                buf[12..18].copy_from_slice(&SRC);
            }
            let now = t0 + Duration::from_millis(round);
            let session = SessionId([rng.below(2) as u8; 16]);
            if let Ok(f) = Fragment::parse(&buf) {
                let _ = r.push(now, session, &f);
            }
            r.expire(now);
            assert!(r.pending() <= 4);
        }
    }
}
