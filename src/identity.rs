//! A member's identity on disk: `--identity-file PATH` of `edge` and `bridge`.
//!
//! The file holds the member's static private key as 64 hex characters and a
//! newline ([`Identity::to_text`]), nothing else. A missing file is created
//! with mode 0600 and a new identity; an existing one is never written, and
//! two processes starting at once never overwrite each other's: the file
//! appears whole or not at all (written beside it with `O_EXCL`, then
//! hard-linked into place, which fails if it exists), and the loser reads
//! the winner's. Without a file the identity is new on every start.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Read, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::{anyhow, bail};

use crate::{
    core::{
        proto::{Identity, RELAY_KEY_PREFIX},
        wire::KeyError,
    },
    io::plain,
};

/// The member's identity: read from `path`, created there if missing, or
/// (without a path) new for this run only. Errors name the file.
pub fn load_identity(path: Option<&Path>) -> anyhow::Result<Identity> {
    let Some(path) = path else {
        let identity = Identity::generate();
        // Said at debug level: "edge running" and "bridge running" name
        // the member, and an error at start stays one line.
        tracing::debug!(
            "identity {} (public key {}) is new for this run; --identity-file keeps one \
             across restarts",
            identity.id(),
            identity.public_hex()
        );
        return Ok(identity);
    };
    match read(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => return parse(path, other),
    }
    match create(path) {
        Ok(identity) => Ok(identity),
        // Another process created it since we looked: use its identity.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => parse(path, read(path)),
        Err(e)
            if e.kind() == ErrorKind::NotFound
                && path.parent().is_some_and(|d| {
                    !d.as_os_str().is_empty() && !d.try_exists().unwrap_or(true)
                }) =>
        {
            let dir = path.parent().unwrap_or(Path::new("."));
            bail!(
                "cannot create identity file {}: directory {} does not exist",
                path.display(),
                dir.display()
            )
        }
        Err(e) => bail!(
            "cannot create identity file {}: {}",
            path.display(),
            plain(&e)
        ),
    }
}

/// The file's text, after a warning if group or others have any access to
/// it.
fn read(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "identity file {} is open to group or others (mode {mode:04o}), and it holds this \
             member's private key: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    Ok(text)
}

/// The identity in an existing file's text.
fn parse(path: &Path, text: std::io::Result<String>) -> anyhow::Result<Identity> {
    let text = text.map_err(|e| {
        anyhow!(
            "cannot read identity file {}: {}",
            path.display(),
            plain(&e)
        )
    })?;
    if text.trim().is_empty() {
        bail!(
            "identity file {} is empty; remove it to have a new identity created",
            path.display()
        );
    }
    if text.trim().starts_with(RELAY_KEY_PREFIX) {
        bail!(
            "identity file {} holds a relay key, not an identity (a private key of 64 hex \
             characters); give a path of its own, where a new identity will be created",
            path.display()
        );
    }
    Identity::parse(&text).map_err(|e| {
        let problem = match e {
            KeyError::Length { found } => format!("found {found} characters"),
            KeyError::NotHex { position, found } => {
                format!("{found:?} at position {position} is not a hex digit")
            }
        };
        anyhow!(
            "invalid identity file {}: expected a private key of 64 hex characters, {problem}",
            path.display()
        )
    })
}

/// Creates the file with a new identity; `AlreadyExists` if it is there.
///
/// The identity is written and synced to a temporary file beside it, which
/// is then hard-linked to `path`: the link fails if `path` exists, and a
/// reader never sees the file empty or half written.
fn create(path: &Path) -> std::io::Result<Identity> {
    let name = path.file_name().ok_or(ErrorKind::InvalidInput)?;
    let identity = Identity::generate();
    // Named after the new member id: random, so no other creator's.
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".new-{}", identity.id()));
    let temp = path.with_file_name(temp_name);
    let linked = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(identity.to_text().as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&temp, path)
    })();
    let _ = std::fs::remove_file(&temp);
    linked?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the new name durable; a failure here costs nothing now.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    tracing::info!(
        "created identity file {} (member {}, public key {})",
        path.display(),
        identity.id(),
        identity.public_hex()
    );
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cli::capture_logs;

    /// A fresh directory for one test's files.
    fn dir(test: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("lanbridge-identity-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_missing_file_is_created_0600_and_then_kept() {
        let d = dir("create");
        let path = d.join("home.identity");
        let (first, logs) = capture_logs(|| load_identity(Some(&path)).unwrap());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first.to_text());
        assert!(
            logs.contains(&format!(
                "created identity file {} (member {}, public key {})",
                path.display(),
                first.id(),
                first.public_hex()
            )),
            "{logs}"
        );

        let (again, logs) = capture_logs(|| load_identity(Some(&path)).unwrap());
        assert_eq!(again.public_hex(), first.public_hex());
        assert_eq!(again.id(), first.id());
        assert!(!logs.contains("created"), "{logs}");
        assert!(!logs.contains("WARN"), "{logs}");
    }

    #[test]
    fn a_file_others_can_read_is_used_with_a_warning() {
        let d = dir("mode");
        let path = d.join("open.identity");
        let identity = Identity::generate();
        std::fs::write(&path, identity.to_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (loaded, logs) = capture_logs(|| load_identity(Some(&path)).unwrap());
        assert_eq!(loaded.public_hex(), identity.public_hex());
        assert!(
            logs.contains(&format!(
                "identity file {} is open to group or others (mode 0644)",
                path.display()
            )),
            "{logs}"
        );
        // Whitespace around the key is fine, as in key files.
        std::fs::write(&path, format!("  {}\n\n", identity.to_text().trim())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (loaded, logs) = capture_logs(|| load_identity(Some(&path)).unwrap());
        assert_eq!(loaded.id(), identity.id());
        assert!(!logs.contains("WARN"), "{logs}");
    }

    #[test]
    fn bad_files_are_named_and_never_overwritten() {
        let d = dir("bad");
        let not_hex = format!("{}zz", "a".repeat(62));
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "short",
                b"abcdef\n",
                "expected a private key of 64 hex characters, found 6 characters",
            ),
            (
                "nothex",
                not_hex.as_bytes(),
                "expected a private key of 64 hex characters, 'z' at position 62 is not a hex digit",
            ),
            ("relay", b"relay-key:00", "holds a relay key, not an identity"),
            (
                "empty",
                b"\n",
                "is empty; remove it to have a new identity created",
            ),
        ];
        for (name, content, expected) in cases {
            let path = d.join(name);
            std::fs::write(&path, content).unwrap();
            let e = load_identity(Some(&path)).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{name}: {e}");
            assert!(e.contains(expected), "{name}: {e}");
            assert_eq!(std::fs::read(&path).unwrap(), *content, "{name} changed");
        }
        let path = d.join("binary");
        std::fs::write(&path, [0xff, 0xfe, 0]).unwrap();
        let e = load_identity(Some(&path)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read identity file {}: ", path.display())),
            "{e}"
        );
        let e = load_identity(Some(&d)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("cannot read identity file {}: Is a directory", d.display())
        );
    }

    #[test]
    fn a_missing_directory_is_named() {
        let d = dir("nodir");
        let path = d.join("no/such/dir/x.identity");
        let e = load_identity(Some(&path)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cannot create identity file {}: directory {} does not exist",
                path.display(),
                d.join("no/such/dir").display()
            )
        );
    }

    #[test]
    fn without_a_file_the_identity_is_new_each_time() {
        let (a, logs) = capture_logs(|| load_identity(None).unwrap());
        let b = load_identity(None).unwrap();
        assert_ne!(a.id(), b.id());
        assert!(
            logs.contains(&format!(
                "identity {} (public key {}) is new for this run; --identity-file keeps one \
                 across restarts",
                a.id(),
                a.public_hex()
            )),
            "{logs}"
        );
    }

    /// Many creators at once: one file, one identity, all of them get it.
    #[test]
    fn concurrent_creators_agree() {
        let d = dir("race");
        let path = d.join("shared.identity");
        let ids: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_identity(Some(&path)).unwrap().public_hex()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let file = Identity::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(ids.iter().all(|id| *id == file.public_hex()), "{ids:?}");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }
}
