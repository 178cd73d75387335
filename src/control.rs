//! The operator's way in: a control socket per process, the optional
//! metrics listener, and the `lanbridge status` client.
//!
//! Every long-running role listens on the abstract unix socket
//! `@lanbridge-<role>-<pid>`. Abstract sockets belong to a network
//! namespace and vanish with the process: nothing on disk to clean up, and
//! `/proc/net/unix` (read from inside a namespace) lists exactly that
//! namespace's processes.
//!
//! Protocol: a client connects and reads one JSON document (pretty-printed),
//! a [`Status`], until EOF. It sends nothing. Only root and the process's
//! own user are served (checked with `SO_PEERCRED`), since anyone in the
//! namespace can connect to an abstract socket.
//!
//! Server invariants: the driver's loop never waits on a client. It accepts
//! in its `select!` ([`Ops::accept`]), builds the snapshot from its own state
//! (owned data) and hands it to a spawned task ([`Ops::serve`]). At most
//! [`MAX_IN_FLIGHT`] connections are served at once (more are closed at
//! once), and each gets [`CLIENT_TIMEOUT`] in all.

use std::{
    io::{self, Read},
    os::{linux::net::SocketAddrExt, unix::net::SocketAddr as UnixAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::Semaphore,
};
use tracing::{debug, info};

use crate::{
    cli::{OpsArgs, StatusArgs},
    io::plain,
    metrics,
    status::{self, Role, Status},
};

/// Connections served at once, control and metrics together.
pub const MAX_IN_FLIGHT: usize = 8;
/// Time a client gets to be served, in all.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Prefix of every control socket name (abstract; shown with `@`).
pub const SOCKET_PREFIX: &str = "lanbridge-";

/// The control socket name of a process, without the `@`.
pub fn socket_name(role: Role, pid: u32) -> String {
    format!("{SOCKET_PREFIX}{}-{pid}", role.as_str())
}

/// A connection waiting to be served.
pub enum Incoming {
    /// A `lanbridge status` client.
    Control(UnixStream),
    /// An HTTP client of the metrics endpoint.
    Metrics(TcpStream),
    /// Accepting failed (e.g. out of file descriptors); nothing to serve.
    Failed(io::Error),
}

/// A process's control socket and metrics listener.
pub struct Ops {
    control: UnixListener,
    name: String,
    metrics: Option<TcpListener>,
    started: Instant,
    permits: Arc<Semaphore>,
}

impl Ops {
    /// Listens on `@lanbridge-<role>-<pid>` and, with `--metrics`, on the
    /// metrics address. Must run inside a tokio runtime.
    pub async fn start(role: Role, args: &OpsArgs) -> anyhow::Result<Ops> {
        let name = socket_name(role, std::process::id());
        let control = bind_abstract(&name).map_err(|e| {
            anyhow::anyhow!("cannot listen on control socket @{name}: {}", plain(&e))
        })?;
        let metrics = match args.metrics {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen for metrics on {addr}: {}", plain(&e))
                })?;
                info!(%addr, "serving metrics at http://{addr}/metrics");
                Some(l)
            }
            None => None,
        };
        debug!(socket = %format!("@{name}"), "control socket");
        Ok(Ops {
            control,
            name,
            metrics,
            started: Instant::now(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// The control socket's name, without the `@`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next connection. Cancel-safe, for `select!`.
    pub async fn accept(&self) -> Incoming {
        let metrics = async {
            match &self.metrics {
                Some(l) => l.accept().await.map(|(s, _)| s),
                None => std::future::pending().await,
            }
        };
        let incoming = tokio::select! {
            r = self.control.accept() => r.map(|(s, _)| Incoming::Control(s)),
            r = metrics => r.map(Incoming::Metrics),
        };
        match incoming {
            Ok(i) => i,
            Err(e) => {
                // Typically EMFILE; don't spin on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Incoming::Failed(e)
            }
        }
    }

    /// Serves a connection from a task of its own, with a snapshot from
    /// `snapshot` (called only if the connection is served at all).
    pub fn serve(&self, incoming: Incoming, snapshot: impl FnOnce() -> Status) {
        if let Incoming::Failed(e) = &incoming {
            debug!("accept: {}", plain(e));
            return;
        }
        if let Incoming::Control(s) = &incoming {
            // Abstract sockets have no file permissions: anyone in the
            // namespace can connect. Serve root and our own user only.
            let uid = s.peer_cred().map(|c| c.uid());
            let me = nix::unistd::geteuid().as_raw();
            if !matches!(uid, Ok(u) if u == 0 || u == me) {
                debug!(?uid, "status client of another user; closed");
                return;
            }
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            debug!("too many status clients at once; closing one");
            return;
        };
        let mut status = snapshot();
        status.uptime_seconds = status::secs(self.started.elapsed());
        tokio::spawn(async move {
            let result = tokio::time::timeout(CLIENT_TIMEOUT, async move {
                match incoming {
                    Incoming::Control(mut s) => {
                        let json = serde_json::to_vec_pretty(&status).map_err(io::Error::other)?;
                        s.write_all(&json).await?;
                        s.shutdown().await
                    }
                    Incoming::Metrics(s) => metrics::serve_http(s, &status).await,
                    Incoming::Failed(_) => Ok(()),
                }
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("status client: {}", plain(&e)),
                Err(_) => debug!("status client too slow; closed"),
            }
            drop(permit);
        });
    }
}

fn bind_abstract(name: &str) -> io::Result<UnixListener> {
    let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
    let l = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    l.set_nonblocking(true)?;
    UnixListener::from_std(l)
}

/// A lanbridge process found in `/proc/net/unix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The socket name, without the `@`.
    pub name: String,
    /// The role part of the name.
    pub role: String,
    /// The pid part of the name.
    pub pid: u32,
}

/// The listening lanbridge control sockets in the text of `/proc/net/unix`,
/// sorted by name. Lines that don't parse are skipped.
pub fn parse_proc_net_unix(text: &str) -> Vec<Found> {
    /// `__SO_ACCEPTCON`: the socket is listening.
    const ACCEPTCON: u32 = 1 << 16;
    let mut found: Vec<Found> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode [Path]
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let path = fields.get(7)?;
            if flags & ACCEPTCON == 0 {
                return None;
            }
            let name = path.strip_prefix('@')?;
            let rest = name.strip_prefix(SOCKET_PREFIX)?;
            let (role, pid) = rest.rsplit_once('-')?;
            let pid = pid.parse().ok()?;
            if role.is_empty() {
                return None;
            }
            Some(Found {
                name: name.to_string(),
                role: role.to_string(),
                pid,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found.dedup();
    found
}

/// Reads one snapshot, as raw JSON text, from the control socket `name`
/// (without the `@`).
pub fn fetch(name: &str) -> anyhow::Result<String> {
    let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
    let mut s = std::os::unix::net::UnixStream::connect_addr(&addr)
        .map_err(|e| anyhow::anyhow!("cannot connect to @{name}: {}", plain(&e)))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read from @{name}: {}", plain(&e)))?;
    if text.is_empty() {
        bail!(
            "@{name} closed the connection without a snapshot (it serves only root and \
             its own user, and at most {MAX_IN_FLIGHT} clients at once)"
        );
    }
    Ok(text)
}

/// `lanbridge status`: finds the process, asks it, prints its snapshot.
pub fn status_command(args: StatusArgs) -> anyhow::Result<()> {
    let name = match args.socket {
        Some(s) => s.strip_prefix('@').unwrap_or(&s).to_string(),
        None => {
            let text = std::fs::read_to_string("/proc/net/unix")
                .map_err(|e| anyhow::anyhow!("cannot read /proc/net/unix: {}", plain(&e)))?;
            pick(&parse_proc_net_unix(&text))?
        }
    };
    let text = fetch(&name)?;
    if args.json {
        // The server sends it pretty, in field order; print it as sent, so
        // fields a newer server adds are kept.
        serde_json::from_str::<serde_json::Value>(&text)
            .with_context(|| format!("@{name} sent invalid JSON"))?;
        println!("{}", text.trim_end());
    } else {
        let status: Status = serde_json::from_str(&text)
            .with_context(|| format!("@{name} sent a snapshot this version can't read"))?;
        print!("{}", status::render(&status));
    }
    Ok(())
}

/// The one process to ask, or an error saying why there isn't one.
fn pick(found: &[Found]) -> anyhow::Result<String> {
    match found {
        [] => bail!("no lanbridge process in this network namespace"),
        [one] => Ok(one.name.clone()),
        many => {
            let mut msg = format!(
                "{} lanbridge processes in this network namespace; pick one with --socket NAME:",
                many.len()
            );
            for f in many {
                msg.push_str(&format!("\n  @{}  {}  pid {}", f.name, f.role, f.pid));
            }
            bail!(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_NET_UNIX: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 23456 @lanbridge-relay-812
0000000000000000: 00000003 00000000 00000000 0001 03 23460 @lanbridge-relay-812
0000000000000000: 00000002 00000000 00010000 0001 01 23999 @lanbridge-edge-77
0000000000000000: 00000002 00000000 00010000 0001 01 11111 /run/systemd/private
0000000000000000: 00000002 00000000 00010000 0001 01 11112 @/tmp/.X11-unix/X0
0000000000000000: 00000002 00000000 00000000 0002 01 11113
0000000000000000: 00000002 00000000 00010000 0001 01 11114 @lanbridge-bridge-notapid
0000000000000000: 00000002 00000000 00010000 0001 01 11115 @lanbridge-1
garbage line
";

    #[test]
    fn proc_net_unix_lists_listening_lanbridge_sockets_only() {
        let found = parse_proc_net_unix(PROC_NET_UNIX);
        assert_eq!(
            found,
            vec![
                Found {
                    name: "lanbridge-edge-77".into(),
                    role: "edge".into(),
                    pid: 77
                },
                Found {
                    name: "lanbridge-relay-812".into(),
                    role: "relay".into(),
                    pid: 812
                },
            ]
        );
        assert!(parse_proc_net_unix("").is_empty());
    }

    #[test]
    fn pick_needs_exactly_one() {
        let found = parse_proc_net_unix(PROC_NET_UNIX);
        assert_eq!(
            pick(&[]).unwrap_err().to_string(),
            "no lanbridge process in this network namespace"
        );
        assert_eq!(pick(&found[1..]).unwrap(), "lanbridge-relay-812");
        let many = pick(&found).unwrap_err().to_string();
        assert!(many.contains("--socket"), "{many}");
        assert!(many.contains("@lanbridge-edge-77  edge  pid 77"), "{many}");
        assert!(
            many.contains("@lanbridge-relay-812  relay  pid 812"),
            "{many}"
        );
    }

    #[test]
    fn serves_one_snapshot_and_status_reads_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ops = Ops::start(Role::Relay, &OpsArgs::default()).await.unwrap();
            let name = ops.name().to_string();
            let client = tokio::task::spawn_blocking(move || fetch(&name));
            let incoming = ops.accept().await;
            ops.serve(incoming, crate::status::tests::relay_fixture);
            let text = client.await.unwrap().unwrap();
            let got: Status = serde_json::from_str(&text).unwrap();
            assert_eq!(got.role, Role::Relay);
            assert_eq!(got.relay.unwrap().peers.len(), 2);
        });
    }
}
