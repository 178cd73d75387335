//! Child processes started inside namespaces.
//!
//! Invariants:
//! - A child is only ever signalled while it is known not to be reaped (the
//!   check and the `kill` happen under one lock, and only this module reaps),
//!   so a signal never hits a recycled pid.
//! - Waiting is event driven through a pidfd; no fixed sleeps.

use std::{
    fs::{self, File},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// How long `Lab` cleanup waits after SIGTERM before it sends SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

struct State {
    child: Child,
    status: Option<ExitStatus>,
}

impl State {
    /// Reaps the child if it has exited, without blocking.
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
            }
        }
        self.status
    }
}

pub(crate) struct ProcInner {
    pid: u32,
    label: String,
    log: PathBuf,
    pidfd: Option<OwnedFd>,
    state: Mutex<State>,
}

/// A process spawned with [`super::Ns::spawn`]: its stdout and stderr go to
/// a log file; the [`super::Lab`] stops it (SIGTERM, then SIGKILL) when
/// dropped or closed. Clones share
/// the same process.
#[derive(Clone)]
pub struct Proc(pub(crate) Arc<ProcInner>);

impl Proc {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to
    /// `log`.
    pub(crate) fn spawn(mut cmd: Command, label: &str, log: PathBuf) -> Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open log {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {label}: {cmd:?}"))?;
        let pid = child.id();
        Ok(Proc(Arc::new(ProcInner {
            pid,
            label: label.to_string(),
            log,
            pidfd: pidfd_open(pid),
            state: Mutex::new(State {
                child,
                status: None,
            }),
        })))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// The label given at spawn (program name and namespace).
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// Path of the file holding its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.0.log
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.0.log).unwrap_or_default()).into_owned()
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.0.state.lock().unwrap().poll()
    }

    /// True while it has not exited.
    pub fn is_running(&self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `sig`. Fails if the process has already exited.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let mut st = self.0.state.lock().unwrap();
        if let Some(s) = st.poll() {
            bail!("{} (pid {}) already exited: {s}", self.0.label, self.0.pid);
        }
        // Still unreaped under the lock: the pid cannot have been reused.
        kill(Pid::from_raw(self.0.pid as i32), sig)
            .with_context(|| format!("kill -{sig} {}", self.0.pid))
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            wait_readable(self.0.pidfd.as_ref(), left.min(Duration::from_millis(200)));
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit status.
    pub fn stop(&self, timeout: Duration) -> Option<ExitStatus> {
        if self.signal(Signal::SIGTERM).is_err() {
            return self.try_status();
        }
        self.wait_timeout(timeout)
    }

    /// Stops it without mercy: SIGTERM, `grace`, SIGKILL, reap.
    pub(crate) fn terminate(&self, grace: Duration) {
        if self.stop(grace).is_none() {
            let _ = self.signal(Signal::SIGKILL);
            let mut st = self.0.state.lock().unwrap();
            if st.status.is_none() {
                st.status = st.child.wait().ok();
            }
        }
    }
}

/// A pidfd for `pid` (Linux 5.3+), or `None`, in which case waits poll.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Blocks until `fd` is readable (the process exited) or `timeout` passes;
/// without a pidfd, sleeps a short slice instead.
fn wait_readable(fd: Option<&OwnedFd>, timeout: Duration) {
    match fd {
        Some(fd) => {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, ms) };
        }
        None => std::thread::sleep(timeout.min(Duration::from_millis(10))),
    }
}

/// Runs `cmd` to completion with stdout and stderr collected through files
/// `out_base.out` / `out_base.err` (files, not pipes, so a grandchild that
/// keeps them open cannot hang us). Kills it and fails after `timeout`.
/// `track(proc, true)` is called once it runs and `track(proc, false)` once
/// it is reaped, so an owner can stop it if it is torn down meanwhile.
pub(crate) fn output_timeout(
    mut cmd: Command,
    timeout: Duration,
    out_base: &Path,
    track: &dyn Fn(&Proc, bool),
) -> Result<Output> {
    let out_path = out_base.with_extension("out");
    let err_path = out_base.with_extension("err");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).context("create stdout file")?)
        .stderr(File::create(&err_path).context("create stderr file")?);
    let desc = format!("{cmd:?}");
    let proc = {
        let child = cmd.spawn().with_context(|| format!("spawn {desc}"))?;
        let pid = child.id();
        Proc(Arc::new(ProcInner {
            pid,
            label: desc.clone(),
            log: out_path.clone(),
            pidfd: pidfd_open(pid),
            state: Mutex::new(State {
                child,
                status: None,
            }),
        }))
    };
    track(&proc, true);
    let status = proc.wait_timeout(timeout);
    if status.is_none() {
        let _ = proc.signal(Signal::SIGKILL);
        proc.wait_timeout(Duration::from_secs(5));
    }
    track(&proc, false);
    let stdout = fs::read(&out_path).unwrap_or_default();
    let stderr = fs::read(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "timed out after {timeout:?}: {desc}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}
