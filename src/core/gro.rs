//! PLACEHOLDER until the coalescer lands (branch h-gro).
use crate::core::offload::VnetHdr;

#[derive(Default)]
pub struct CoalesceStats {
    pub superframes_out: u64,
}
#[derive(Default)]
pub struct Coalescer {
    s: CoalesceStats,
}
impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer::default()
    }
    pub fn push(&mut self, frame: &[u8], emit: &mut dyn FnMut(&VnetHdr, &[u8])) {
        emit(&VnetHdr::NONE, frame)
    }
    pub fn flush(&mut self, _emit: &mut dyn FnMut(&VnetHdr, &[u8])) {}
    pub fn stats(&self) -> &CoalesceStats {
        &self.s
    }
}
