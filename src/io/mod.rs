//! Thin adapters over kernel objects. No decisions live here: each function
//! opens, configures, reads or writes one thing and reports failures with the
//! operation and the object named.

pub mod netlink;
pub mod packet_socket;
pub mod tap;
pub mod udp;

use std::io;

/// An I/O failure with what was being done, and to what.
#[derive(Debug, thiserror::Error)]
// The underlying error is part of the message, and deliberately not a
// `source()`: anyhow's `{:#}` would print it a second time.
#[error("{op} {target}: {}", plain(error))]
pub struct IoError {
    /// What was being done, e.g. "cannot create TAP".
    pub op: &'static str,
    /// The object, e.g. the interface name.
    pub target: String,
    /// The underlying error.
    pub error: io::Error,
}

impl IoError {
    /// Wraps `error` with the operation and the object.
    pub fn new(op: &'static str, target: impl Into<String>, error: io::Error) -> Self {
        IoError {
            op,
            target: target.into(),
            error,
        }
    }
}

/// An `io::Error` as a user reads it: "No such file or directory", without
/// the "(os error 2)" suffix the standard library appends.
pub fn plain(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// The longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Checks an interface name the way the kernel would, but with a clear error
/// instead of a silent truncation.
pub fn check_ifname(name: &str) -> Result<(), IoError> {
    let bad = |why: &str| {
        IoError::new(
            "invalid interface name",
            name,
            io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
        )
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_IFNAME {
        return Err(bad("longer than 15 bytes"));
    }
    if name.contains(['/', ' ', ':', '\0']) || name == "." || name == ".." {
        return Err(bad("contains '/', ':', a space or NUL"));
    }
    Ok(())
}
