//! Untrusted vnet headers and frames through everything that reads them:
//! `VnetHdr::validate`, `offload::segment`, `offload::deliver` and the GRO
//! `Coalescer`.
//!
//! Input: 10 bytes of vnet header (in the host's byte order, as a TAP or a
//! packet socket hands it over; the seeds are little-endian), one byte of knobs (MTU, whether the device takes vnet
//! headers), then the frame. Checked besides "no panic":
//! * every (header, frame) handed on with a header other than NONE, by
//!   `deliver` or by the `Coalescer`, passes `validate`;
//! * a pair that passes `validate` can be segmented (no MTU limit);
//! * a super-frame the `Coalescer` built, cut again by `segment`, comes
//!   back from a fresh `Coalescer` byte for byte with the same header.
//!
//! Run from the repository's top level (cargo-fuzz from crates.io):
//! `cargo +nightly fuzz run vnet_gro fuzz/corpus/vnet_gro fuzz/seeds/vnet_gro -- -max_total_time=120`.
//! `fuzz/seeds/vnet_gro` holds a few valid inputs (TCP and UDP super-frames
//! with their headers, wire-ready TCP segments) so that the run starts
//! from frames the checks accept; add `-max_len=70000` to reach 64 KiB
//! super-frames.

#![no_main]

use lanbridge::core::{
    gro::Coalescer,
    offload::{self, VnetHdr},
};
use libfuzzer_sys::fuzz_target;

const MTUS: [usize; 8] = [0, 68, 576, 1280, 1500, 9000, 65535, usize::MAX];

/// Asserts that `hdr` is NONE or describes `frame`, and that a pair that
/// validates can be segmented.
fn check_handed_on(hdr: &VnetHdr, frame: &[u8], scratch: &mut Vec<u8>) {
    if *hdr == VnetHdr::NONE {
        return;
    }
    if let Err(e) = hdr.validate(frame) {
        panic!("handed on a header that does not validate: {e}: {hdr:?}");
    }
    assert_segments(hdr, frame, scratch);
}

/// A pair that validates is one `segment` can cut.
fn assert_segments(hdr: &VnetHdr, frame: &[u8], scratch: &mut Vec<u8>) {
    if let Err(e) = offload::segment(hdr, frame, usize::MAX, scratch, &mut |_| {}) {
        panic!("validated, but segment fails: {e}: {hdr:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((hdr_bytes, rest)) = data.split_first_chunk::<{ VnetHdr::LEN }>() else {
        return;
    };
    let Some((&knobs, frame)) = rest.split_first() else {
        return;
    };
    let Ok(hdr) = VnetHdr::parse(hdr_bytes) else {
        return;
    };
    let mtu = MTUS[usize::from(knobs & 7)];
    let whole_ok = knobs & 8 != 0;
    let mut scratch = Vec::new();

    if hdr.validate(frame).is_ok() {
        assert_segments(&hdr, frame, &mut scratch);
    }

    let mut out = Vec::new();
    let _ = offload::deliver(&hdr, frame, whole_ok, mtu, &mut out, &mut |h, f| {
        let mut scratch = Vec::new();
        check_handed_on(h, f, &mut scratch);
    });

    // The frame and its segments, as a receive batch.
    let mut segments = Vec::new();
    let _ = offload::segment(&hdr, frame, mtu, &mut scratch, &mut |s| {
        segments.push(s.to_vec())
    });
    let mut built = Vec::new();
    let mut c = Coalescer::new();
    let mut emit = |h: &VnetHdr, f: &[u8]| {
        if *h != VnetHdr::NONE {
            built.push((*h, f.to_vec()));
        }
    };
    c.push(frame, &mut emit);
    for s in &segments {
        c.push(s, &mut emit);
    }
    c.flush(&mut emit);

    for (h, f) in &built {
        check_handed_on(h, f, &mut scratch);
        // Cut again and put back together: the same super-frame.
        let mut again = Vec::new();
        offload::segment(h, f, usize::MAX, &mut scratch, &mut |s| {
            again.push(s.to_vec())
        })
        .expect("segment a coalesced super-frame");
        let mut back = Vec::new();
        let mut c = Coalescer::new();
        for s in &again {
            c.push(s, &mut |h, f| back.push((*h, f.to_vec())));
        }
        c.flush(&mut |h, f| back.push((*h, f.to_vec())));
        assert_eq!(back.len(), 1, "re-coalesced into {} frames", back.len());
        assert_eq!(back[0].0, *h);
        assert!(back[0].1 == *f, "re-coalesced bytes differ");
    }
});
