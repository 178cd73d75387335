//! Fragments built from fuzz bytes through `wire::Reassembler::push`,
//! `expire`, `pending` and `next_deadline`, with a fuzz-chosen cap on
//! pending frames and a maximum age, compared step by step with a plain
//! model of the rules in docs/protocol.md ("Reassembly").
//!
//! Input: a byte for the cap (`% 8 + 1`), a byte for the maximum age (in
//! 10 ms, plus 1 ms), then records, each an op byte:
//! * bits 0-1 = 0 or 1, **push**: a byte of time passing (ms), a byte of
//!   frame id (`% 4`), a byte of count (0 means 1), a byte of index
//!   (`% count`), a byte of MACs (bits 0-1 the destination, 2-3 the
//!   source), then the chunk: if op bit 2, a blob (u16 LE length, bytes),
//!   else a u16 LE length of bytes filled with a pattern (to reach
//!   `MAX_FRAME` with short inputs); op bits 3-4 pick the session;
//! * 2, **expire**: a byte of time passing (in 10 ms);
//! * 3, **raw**: a byte of time passing (ms) and a blob parsed with
//!   `Fragment::parse`, then pushed; op bits 3-4 pick the session.
//!
//! Time moves forward by at least 1 ns at every step, so no two frames
//! start at the same instant and "the pending frame that started first"
//! is one frame. Checked besides "no panic": every result (frame, nothing,
//! or which error), `pending()`, `next_deadline()` and what `expire`
//! returns are the model's; a completed frame is at most `MAX_FRAME`
//! bytes, and `pending()` never exceeds the cap.
//!
//! Run from the repository's top level (cargo-fuzz from crates.io):
//! `cargo +nightly fuzz run reassembler fuzz/corpus/reassembler fuzz/seeds/reassembler -- -max_total_time=120`,
//! or `scripts/fuzz.sh reassembler`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Input;
use lanbridge::core::wire::{
    Fragment, Reassembler, SessionId, WireError, FRAG_HEADER_LEN, MACS_LEN, MAX_FRAME,
};
use libfuzzer_sys::fuzz_target;

const MACS: [[u8; 6]; 4] = [
    [0xff; 6],
    [2, 0, 0, 0, 0, 1],
    [2, 0, 0, 0, 0, 2],
    [0x33, 0x33, 0, 0, 0, 1],
];

/// A frame in progress, as docs/protocol.md describes it.
struct Pending {
    session: SessionId,
    frame_id: u32,
    count: u8,
    macs: Vec<u8>,
    started: Instant,
    chunks: Vec<Option<Vec<u8>>>,
    len: usize,
}

/// What `push` should return.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Frame(Vec<u8>),
    Nothing,
    Error(WireError),
}

struct Model {
    cap: usize,
    max_age: Duration,
    pending: Vec<Pending>,
}

impl Model {
    fn push(&mut self, now: Instant, session: SessionId, f: &Fragment<'_>) -> Outcome {
        let macs = [f.dst().0, f.src().0].concat();
        if f.count() == 1 {
            return Outcome::Frame([&macs[..], f.chunk()].concat());
        }
        let mut overflow = false;
        let at = match self
            .pending
            .iter()
            .position(|p| p.session == session && p.frame_id == f.frame_id())
        {
            Some(at) => at,
            None => {
                if self.pending.len() >= self.cap {
                    let oldest = (0..self.pending.len())
                        .min_by_key(|&i| self.pending[i].started)
                        .unwrap();
                    self.pending.remove(oldest);
                    overflow = true;
                }
                self.pending.push(Pending {
                    session,
                    frame_id: f.frame_id(),
                    count: f.count(),
                    macs: macs.clone(),
                    started: now,
                    chunks: vec![None; usize::from(f.count())],
                    len: MACS_LEN,
                });
                self.pending.len() - 1
            }
        };
        let quiet = |overflow: bool| {
            if overflow {
                Outcome::Error(WireError::ReassemblyOverflow)
            } else {
                Outcome::Nothing
            }
        };
        let p = &mut self.pending[at];
        if p.count != f.count() || p.macs != macs {
            self.pending.remove(at);
            return Outcome::Error(WireError::Malformed(""));
        }
        let slot = &mut p.chunks[usize::from(f.index())];
        if slot.is_some() {
            return quiet(overflow);
        }
        if p.len + f.chunk().len() > MAX_FRAME {
            self.pending.remove(at);
            return Outcome::Error(WireError::TooBig);
        }
        *slot = Some(f.chunk().to_vec());
        p.len += f.chunk().len();
        if p.chunks.iter().any(Option::is_none) {
            return quiet(overflow);
        }
        let p = self.pending.remove(at);
        let mut frame = p.macs;
        for c in p.chunks {
            frame.extend_from_slice(&c.unwrap());
        }
        Outcome::Frame(frame)
    }

    fn expire(&mut self, now: Instant) -> usize {
        let before = self.pending.len();
        self.pending
            .retain(|p| now.saturating_duration_since(p.started) < self.max_age);
        before - self.pending.len()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.started + self.max_age).min()
    }
}

/// The real result in the model's terms (the text of `Malformed` aside).
fn outcome(r: Result<Option<lanbridge::core::wire::Reassembled<'_>>, WireError>) -> Outcome {
    match r {
        Ok(Some(r)) => Outcome::Frame(r.frame.to_vec()),
        Ok(None) => Outcome::Nothing,
        Err(WireError::Malformed(_)) => Outcome::Error(WireError::Malformed("")),
        Err(e) => Outcome::Error(e),
    }
}

fn push(
    real: &mut Reassembler,
    model: &mut Model,
    now: Instant,
    session: SessionId,
    payload: &[u8],
) {
    let Ok(f) = Fragment::parse(payload) else {
        return;
    };
    let want = model.push(now, session, &f);
    let got = outcome(real.push(now, session, &f));
    if let Outcome::Frame(frame) = &got {
        if f.count() > 1 {
            assert!(frame.len() <= MAX_FRAME, "{} bytes", frame.len());
        }
    }
    assert_eq!(got, want);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (Some(cap), Some(age)) = (input.u8(), input.u8()) else {
        return;
    };
    let cap = usize::from(cap % 8) + 1;
    let max_age = Duration::from_millis(u64::from(age) * 10 + 1);
    let mut real = Reassembler::new(cap, max_age);
    let mut model = Model {
        cap,
        max_age,
        pending: Vec::new(),
    };
    let mut now = Instant::now();
    let mut payload = Vec::new();
    while let Some(op) = input.u8() {
        now += Duration::from_nanos(1);
        let session = SessionId([op >> 3 & 3; 16]);
        match op & 3 {
            0 | 1 => {
                let (Some(dt), Some(id), Some(count), Some(index), Some(macs)) =
                    (input.u8(), input.u8(), input.u8(), input.u8(), input.u8())
                else {
                    break;
                };
                now += Duration::from_millis(u64::from(dt));
                let count = count.max(1);
                payload.clear();
                payload.extend_from_slice(&u32::from(id % 4).to_be_bytes());
                payload.extend_from_slice(&[index % count, count]);
                payload.extend_from_slice(&MACS[usize::from(macs & 3)]);
                payload.extend_from_slice(&MACS[usize::from(macs >> 2 & 3)]);
                if op & 4 != 0 {
                    let Some(chunk) = input.blob() else { break };
                    payload.extend_from_slice(chunk);
                } else {
                    let Some(len) = input.u16() else { break };
                    payload.extend((0..len).map(|i| (i as u8) ^ index));
                }
                debug_assert!(payload.len() >= FRAG_HEADER_LEN);
                push(&mut real, &mut model, now, session, &payload);
            }
            2 => {
                let Some(dt) = input.u8() else { break };
                now += Duration::from_millis(u64::from(dt) * 10);
                assert_eq!(real.expire(now), model.expire(now), "expired");
            }
            _ => {
                let (Some(dt), Some(raw)) = (input.u8(), input.blob()) else {
                    break;
                };
                now += Duration::from_millis(u64::from(dt));
                push(&mut real, &mut model, now, session, raw);
            }
        }
        assert!(
            real.pending() <= cap,
            "{} pending, cap {cap}",
            real.pending()
        );
        assert_eq!(real.pending(), model.pending.len(), "pending");
        assert_eq!(real.next_deadline(), model.next_deadline(), "next deadline");
    }
});
