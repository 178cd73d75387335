//! `--config FILE`: a bad file ends the real binary with one line naming the
//! file, the line and the key, and exit status 1. No root needed.

use std::{path::PathBuf, process::Command};

use crate::harness::lanbridge_bin;

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lanbridge-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Runs `lanbridge ARGS` and checks: exit status 1, stderr exactly one line,
/// `lanbridge: error: ` and `expected`.
fn assert_one_line_error(args: &[&str], expected: &str) {
    let out = Command::new(lanbridge_bin()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(
        stderr,
        format!("lanbridge: error: {expected}\n"),
        "{args:?}"
    );
}

#[test]
fn bad_config_files_are_one_line_errors() {
    let f = temp_file("unknown.toml", "relay = \"127.0.0.1:7171\"\nmtuu = 1400\n");
    let f = f.to_str().unwrap();
    assert_one_line_error(
        &["edge", "--config", f],
        &format!(
            "{f}: line 2: unknown key \"mtuu\" (expected one of: relay, key_file, identity_file, tap, \
             address, mac, mtu, max_datagram, no_offload, no_mss_clamp, no_direct, metrics)"
        ),
    );

    let f = temp_file(
        "range.toml",
        "iface = \"lo\"\ntap = \"t0\"\n\nmax_datagram = 70000\n",
    );
    let f = f.to_str().unwrap();
    assert_one_line_error(
        &["bridge", "--config", f],
        &format!("{f}: line 4: invalid value for max_datagram: 70000 is not in 576..=65000"),
    );

    let f = temp_file("syntax.toml", "listen = 0.0.0.0:7171\n");
    let f = f.to_str().unwrap();
    let out = Command::new(lanbridge_bin())
        .args(["relay", "--config", f])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("lanbridge: error: {f}: line 1: invalid TOML: ")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    assert_one_line_error(
        &["relay", "--config", "/no/such/relay.toml"],
        "cannot read config file /no/such/relay.toml: No such file or directory",
    );

    let f = temp_file("short.toml", "key_file = \"k\"\n");
    let f = f.to_str().unwrap();
    assert_one_line_error(
        &["relay", "--config", f],
        &format!("missing listen: give --listen or set listen in {f}"),
    );
}

#[test]
fn config_key_file_is_relative_to_the_config_file() {
    let f = temp_file(
        "relay.toml",
        "listen = \"127.0.0.1:0\"\nkey_file = \"absent.key\"\n",
    );
    let key = f.with_file_name("absent.key");
    assert_one_line_error(
        &["relay", "--config", f.to_str().unwrap()],
        &format!(
            "cannot read key file {}: No such file or directory",
            key.display()
        ),
    );
}
