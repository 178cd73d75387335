//! Namespace plumbing: the library's [`lanbridge::lab::netns`], plus the
//! harness's own stale-namespace sweep (it knows the test naming scheme).

use std::sync::OnceLock;

pub use lanbridge::lab::netns::*;

/// Deletes namespaces left by earlier runs of this harness that died without
/// cleaning up (killed test binaries): names `lb{pid}x{n}-...` whose `pid` is
/// no longer alive. Done once per process; other names are never touched.
pub fn sweep_stale() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| lanbridge::lab::netns::sweep_stale(stale_owner));
}

/// The pid in a harness namespace name `lb{pid}x{n}-{short}`.
fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("lb")?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, _) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}
