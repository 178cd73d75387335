//! The command line's answers to bad input: one clear line, exit status 1
//! (2 for what clap rejects), never a panic. No root needed.

use std::process::{Command, Output};

use crate::harness::lanbridge_bin;

fn run(args: &[&str]) -> Output {
    Command::new(lanbridge_bin()).args(args).output().unwrap()
}

/// Checks a failure: the exit code, one line of stderr containing `needle`,
/// and no panic.
fn assert_fails(args: &[&str], code: i32, needle: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert!(
        !stderr.contains("(os error"),
        "{args:?}: raw OS error text:\n{stderr}"
    );
    if code == 1 {
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: not one line:\n{stderr}"
        );
    }
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lanbridge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn genkey_prints_one_fresh_key() {
    let a = run(&["genkey"]);
    let b = run(&["genkey"]);
    assert!(a.status.success());
    let a = String::from_utf8(a.stdout).unwrap();
    let b = String::from_utf8(b.stdout).unwrap();
    assert_eq!(a.lines().count(), 1);
    assert_eq!(a.trim().len(), 64);
    assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn missing_key_file_is_named() {
    assert_fails(
        &["relay", "--listen", "127.0.0.1:0", "--key-file", "/x/y"],
        1,
        "cannot read key file /x/y: No such file or directory",
    );
    assert_fails(
        &[
            "edge",
            "--relay",
            "127.0.0.1:7171",
            "--key-file",
            "/x/y",
            "--tap",
            "t0",
        ],
        1,
        "cannot read key file /x/y: No such file or directory",
    );
}

#[test]
fn malformed_key_file_is_named() {
    let path = temp_file("short.key", "abcdef\n");
    let p = path.to_str().unwrap();
    assert_fails(
        &["relay", "--listen", "127.0.0.1:0", "--key-file", p],
        1,
        &format!("invalid key file {p}"),
    );
}

#[test]
fn bad_flags_are_rejected_by_name() {
    let key = temp_file("good.key", &"ab".repeat(32));
    let k = key.to_str().unwrap();
    assert_fails(
        &[
            "edge",
            "--relay",
            "127.0.0.1:7171",
            "--key-file",
            k,
            "--tap",
            "t0",
            "--address",
            "10.0.0.300/24",
        ],
        2,
        "--address",
    );
    assert_fails(
        &[
            "edge",
            "--relay",
            "127.0.0.1:7171",
            "--key-file",
            k,
            "--tap",
            "t0",
            "--mac",
            "zz",
        ],
        2,
        "--mac",
    );
    assert_fails(
        &["relay", "--listen", "nonsense", "--key-file", k],
        2,
        "--listen",
    );
    assert_fails(
        &[
            "edge",
            "--relay",
            "127.0.0.1:7171",
            "--key-file",
            k,
            "--tap",
            "a-name-that-is-too-long",
        ],
        1,
        "lanbridge: error: invalid interface name a-name-that-is-too-long: longer than 15 bytes\n",
    );
    assert_fails(
        &[
            "edge",
            "--relay",
            "no-such-host.invalid:7171",
            "--key-file",
            k,
            "--tap",
            "t0",
        ],
        1,
        "cannot resolve relay address no-such-host.invalid:7171",
    );
}

#[test]
fn without_privileges_the_error_says_what_is_needed() {
    if !crate::harness::is_root() {
        eprintln!("skipped without_privileges_the_error_says_what_is_needed: needs root to drop to nobody");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let key = temp_file("nobody.key", &"cd".repeat(32));
    let k = key.to_str().unwrap();
    // The checkout may sit in a directory only root can enter (CI clones
    // into `mktemp -d`, mode 0700): give nobody a copy of the binary it can
    // reach, beside the key file.
    let bin = key.with_file_name("lanbridge");
    std::fs::copy(lanbridge_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = key.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (args, needles) in [
        (
            vec![
                "edge",
                "--relay",
                "127.0.0.1:7171",
                "--key-file",
                k,
                "--tap",
                "t0",
            ],
            [
                "cannot create TAP t0: ",
                " (lanbridge needs root or CAP_NET_ADMIN)",
            ],
        ),
        (
            vec![
                "bridge",
                "--iface",
                "lo",
                "--relay",
                "127.0.0.1:7171",
                "--key-file",
                k,
            ],
            [
                "cannot open AF_PACKET socket on lo: ",
                " (lanbridge needs root or CAP_NET_RAW)",
            ],
        ),
    ] {
        // The copy was just written: a child another test forks meanwhile
        // can hold its write fd for a moment (ETXTBSY), so retry briefly.
        let run = || {
            Command::new(&bin)
                .args(&args)
                .uid(65534)
                .gid(65534)
                .output()
        };
        let mut out = run();
        for _ in 0..50 {
            match &out {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    out = run();
                }
                _ => break,
            }
        }
        let out = out.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: expected {needle:?} in:\n{stderr}"
            );
        }
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: not one line:\n{stderr}"
        );
    }
}
