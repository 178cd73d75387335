//! `lanbridge demo` end to end: the tour passes, and nothing of it (no
//! namespace, no process, no directory) is left afterwards, also when it is
//! stopped with SIGTERM halfway.

use std::{
    fs::{self, File},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::harness::{lanbridge_bin, netns::NETNS_DIR, root_or_skip, wait_until};

/// How long a whole demo run may take (it takes about a second alone).
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);

/// A `lanbridge demo` child with stdout and stderr in one file.
struct Demo {
    child: Child,
    out: PathBuf,
}

impl Demo {
    fn start(test: &str, args: &[&str]) -> Demo {
        let dir = std::env::temp_dir().join("lanbridge-netns");
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("demo-{}-{test}.out", std::process::id()));
        let f = File::create(&out).unwrap();
        let child = Command::new(lanbridge_bin())
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn lanbridge demo");
        Demo { child, out }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for the exit; on timeout kills it and panics with its output.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        match status {
            Some(s) => s,
            None => {
                let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
                if !wait_until(Duration::from_secs(10), || {
                    self.child.try_wait().unwrap().is_some()
                }) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                }
                panic!(
                    "lanbridge demo did not finish within {timeout:?}:\n{}",
                    self.output()
                );
            }
        }
    }

    /// Asserts that no namespace, process or directory of this demo is left.
    fn assert_nothing_left(&self) {
        let pid = self.pid();
        let prefix = format!("lbdemo-{pid}-");
        let namespaces: Vec<String> = fs::read_dir(NETNS_DIR)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            namespaces.is_empty(),
            "namespaces left: {namespaces:?}\n{}",
            self.output()
        );
        // Its children name the key file in its directory; none may remain,
        // nor anything it is the parent of.
        let dir = format!("lbdemo-{pid}/");
        let mut left = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let child = status
                .lines()
                .any(|l| l.strip_prefix("PPid:").map(str::trim) == Some(&pid.to_string()));
            if cmdline.contains(&dir) || child {
                left.push(format!("{p}: {cmdline}"));
            }
        }
        assert!(
            left.is_empty(),
            "processes left: {left:?}\n{}",
            self.output()
        );
        let tmp = std::env::temp_dir().join(format!("lbdemo-{pid}"));
        assert!(!tmp.exists(), "{} left\n{}", tmp.display(), self.output());
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_file(&self.out);
        }
    }
}

#[test]
fn demo_tour_passes_and_leaves_nothing_behind() {
    if !root_or_skip("demo_tour_passes_and_leaves_nothing_behind") {
        return;
    }
    let mut demo = Demo::start("tour", &[]);
    let status = demo.wait(DEMO_TIMEOUT);
    let out = demo.output();
    assert!(status.success(), "lanbridge demo failed ({status}):\n{out}");
    let pid = demo.pid();
    for want in [
        "Topology",
        &format!("lbdemo-{pid}-lan1"),
        &format!("lbdemo-{pid}-bridgehost"),
        "192.168.77.101",
        "[ok]   relay",
        "[ok]   edges",
        "[ok]   bridge",
        "virt1 → lan1: ARP resolved 192.168.77.11 is-at",
        "lan1 → virt1: ping 192.168.77.101 answered",
        "virt1 → virt2: ping 192.168.77.102 answered",
        "= bridgehost's eth0",
    ] {
        assert!(out.contains(want), "no {want:?} in the output:\n{out}");
    }
    assert!(out.matches("[ok]").count() >= 10, "{out}");
    assert!(!out.contains("[FAIL]"), "{out}");
    demo.assert_nothing_left();
}

#[test]
fn sigterm_during_the_demo_cleans_up() {
    if !root_or_skip("sigterm_during_the_demo_cleans_up") {
        return;
    }
    let mut demo = Demo::start("sigterm", &[]);
    assert!(
        wait_until(DEMO_TIMEOUT, || demo.output().contains("Topology")),
        "no topology printed:\n{}",
        demo.output()
    );
    kill(Pid::from_raw(demo.pid() as i32), Signal::SIGTERM).unwrap();
    let status = demo.wait(Duration::from_secs(15));
    let out = demo.output();
    assert_eq!(status.code(), Some(128 + 15), "{out}");
    assert!(out.contains("cleaned up"), "{out}");
    demo.assert_nothing_left();
}

#[test]
fn keep_waits_for_sigint_then_cleans_up() {
    if !root_or_skip("keep_waits_for_sigint_then_cleans_up") {
        return;
    }
    let mut demo = Demo::start("keep", &["--keep"]);
    let pid = demo.pid();
    assert!(
        wait_until(DEMO_TIMEOUT, || demo.output().contains("Press Ctrl-C")),
        "--keep did not finish the tour:\n{}",
        demo.output()
    );
    let out = demo.output();
    assert!(
        out.contains(&format!(
            "ip netns exec lbdemo-{pid}-lan1 ping 192.168.77.101"
        )),
        "{out}"
    );
    // Still running, and the topology still answers.
    assert!(demo.child.try_wait().unwrap().is_none(), "{out}");
    let ping = Command::new("ip")
        .args(["netns", "exec", &format!("lbdemo-{pid}-lan1")])
        .args(["ping", "-n", "-c", "1", "-W", "2", "192.168.77.101"])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}\n{out}");
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let status = demo.wait(Duration::from_secs(15));
    assert!(status.success(), "{status}\n{}", demo.output());
    demo.assert_nothing_left();
}
