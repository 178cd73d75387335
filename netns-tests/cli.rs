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

/// Runs the binary with `stdin` as its standard input.
fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(lanbridge_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A child that exits before reading all of it closes the pipe: fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// Checks a failure of a command that reads stdin: exit status 1, one line
/// of stderr containing `needle`, nothing on stdout, no panic.
fn assert_stdin_fails(args: &[&str], stdin: &[u8], needle: &str) {
    let out = run_with_stdin(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: not one line:\n{stderr}"
    );
}

/// A line of `prefix` and 64 lowercase hex characters, and a newline.
fn assert_key_line(out: &Output, prefix: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let hex = text
        .strip_prefix(prefix)
        .and_then(|t| t.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("not {prefix:?}, 64 hex and a newline: {text:?}"));
    assert_eq!(hex.len(), 64, "{text:?}");
    assert!(
        hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{text:?}"
    );
    text
}

#[test]
fn relay_key_prints_the_relay_key_of_a_network_key() {
    let key = run(&["genkey"]);
    assert!(key.status.success());
    let relay_key = assert_key_line(&run_with_stdin(&["relay-key"], &key.stdout), "relay-key:");
    // One way, and the same every time; surrounding whitespace is fine.
    assert!(!relay_key.contains(String::from_utf8_lossy(&key.stdout).trim()));
    let padded = format!("  {}\n\n", String::from_utf8_lossy(&key.stdout).trim());
    assert_eq!(
        assert_key_line(
            &run_with_stdin(&["relay-key"], padded.as_bytes()),
            "relay-key:"
        ),
        relay_key
    );
    let other = run(&["genkey"]);
    assert_ne!(
        assert_key_line(&run_with_stdin(&["relay-key"], &other.stdout), "relay-key:"),
        relay_key
    );

    // A relay key is refused: it can't be derived from again.
    assert_stdin_fails(
        &["relay-key"],
        relay_key.as_bytes(),
        "lanbridge: error: stdin holds a relay key already (relay-key:…); `lanbridge \
         relay-key` takes the network key (lanbridge genkey) and prints its relay key",
    );
    for (garbage, needle) in [
        (
            &b"not a key\n"[..],
            "stdin holds no network key: expected 64 hex characters, found 9",
        ),
        (
            "x".repeat(64).as_bytes(),
            "stdin holds no network key: 'x' at position 0 is not a hex digit",
        ),
        (b"", "stdin is empty; give the key file on it"),
        (&[0xff, 0xfe, 0x00][..], "stdin is not text"),
        (&[b'0'; 100_000][..], "stdin holds more than 4096 bytes"),
    ] {
        assert_stdin_fails(&["relay-key"], garbage, needle);
    }
}

#[test]
fn pubkey_prints_the_public_key_of_an_identity_file() {
    // An identity file holds a private key: any 64 hex characters.
    let private = "5a".repeat(32);
    let public = assert_key_line(
        &run_with_stdin(&["pubkey"], format!("{private}\n").as_bytes()),
        "",
    );
    assert_ne!(public.trim(), private);
    assert_eq!(
        assert_key_line(&run_with_stdin(&["pubkey"], private.as_bytes()), ""),
        public
    );
    let other = assert_key_line(&run_with_stdin(&["pubkey"], "a5".repeat(32).as_bytes()), "");
    assert_ne!(other, public);

    // What it prints is what --refuse-member takes.
    let relay = run(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        "/nonexistent/relay.key",
        "--refuse-member",
        public.trim(),
    ]);
    let stderr = String::from_utf8_lossy(&relay.stderr);
    assert_eq!(relay.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read key file"), "{stderr}");

    assert_stdin_fails(
        &["pubkey"],
        b"abc\n",
        "stdin holds no identity: expected 64 hex characters, found 3",
    );
    assert_stdin_fails(
        &["pubkey"],
        format!("relay-key:{}\n", "00".repeat(32)).as_bytes(),
        "stdin holds a relay key (relay-key:…), not an identity file",
    );
    assert_stdin_fails(&["pubkey"], b"\n", "stdin is empty");
}

#[test]
fn refuse_member_takes_only_public_keys() {
    assert_fails(
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--key-file",
            "/x/y",
            "--refuse-member",
            "zz",
        ],
        2,
        "invalid value 'zz' for '--refuse-member <PUBKEY>': not a member's public key",
    );
}

/// The relay key admits members at the relay but can't join a network: an
/// edge given it as its key file says so and doesn't start.
#[test]

fn an_edge_refuses_a_relay_key_file() {
    let key = run(&["genkey"]);
    let relay_key = run_with_stdin(&["relay-key"], &key.stdout);
    assert!(relay_key.status.success());
    let path = temp_file(
        "edge-relay.key",
        &String::from_utf8(relay_key.stdout).unwrap(),
    );
    let p = path.to_str().unwrap();
    assert_fails(
        &[
            "edge",
            "--relay",
            "127.0.0.1:7171",
            "--key-file",
            p,
            "--tap",
            "lbt-relaykey",
        ],
        1,
        &format!(
            "lanbridge: error: {p} holds a relay key (relay-key:…); edges and bridges need the \
             network key itself (lanbridge genkey); the relay key can't join a network\n"
        ),
    );
}
