//! PLACEHOLDER until MSS clamping lands (branch h-mss).
pub fn clamp_mss(_frame: &mut [u8], _max_frame: usize, _csum_partial: bool) -> Option<(u16, u16)> {
    None
}
