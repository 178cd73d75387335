//! Command-line interface: argument definitions and the small parsers they need.

use std::{
    fmt,
    io::Read,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{anyhow, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    core::{
        mac::MacAddr,
        proto::{parse_public_key, Identity, KeyFile, RelayKey, RELAY_KEY_PREFIX},
        wire::{KeyError, NetworkKey},
    },
    io::plain,
};

/// Join hosts anywhere and whole physical LANs into one Ethernet segment.
#[derive(Debug, Parser)]
#[command(name = "lanbridge", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new random network key (64 hex characters) to stdout.
    Genkey,
    /// Read a network key on stdin and print its relay key, the one a relay
    /// needs: `lanbridge relay-key < net.key > relay.key`.
    RelayKey,
    /// Read an identity file on stdin and print the member's public key
    /// (64 hex characters), e.g. for the relay's --refuse-member.
    Pubkey,
    /// Run a relay: a learning switch per network, reached over UDP.
    Relay(RelayArgs),
    /// Join a network with a TAP device.
    Edge(EdgeArgs),
    /// Share the physical LAN on a NIC into a network (or with a local TAP).
    Bridge(BridgeArgs),
    /// Show peers, learned tables and drop counters of a running lanbridge.
    Status(StatusArgs),
    /// Build a whole topology in network namespaces on this host and show
    /// lanbridge working, step by step.
    Demo(DemoArgs),
}

/// `lanbridge status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The control socket of the process to ask (see `lanbridge status`
    /// without it: with one lanbridge in this network namespace it is found
    /// by itself; with several, they are listed).
    #[arg(long, value_name = "NAME")]
    pub socket: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `lanbridge demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the topology running after the tour, and print commands to
    /// explore it; Ctrl-C removes it.
    #[arg(long)]
    pub keep: bool,
}

/// Options every long-running role shares: how an operator looks inside.
#[derive(Debug, Args, Clone, Default)]
pub struct OpsArgs {
    /// Serve Prometheus metrics over HTTP on this address, e.g. 127.0.0.1:9171.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// `lanbridge relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Read options from this TOML file: keys are the long flags with `_` for
    /// `-`. Required flags may come from it; a flag given here wins over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// UDP address to listen on, e.g. 0.0.0.0:7171 or [::]:7171.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,

    /// A relay key file (`lanbridge relay-key < net.key > relay.key`); repeat
    /// for several isolated networks. A network key file works too, but a
    /// relay needs only the relay key.
    #[arg(long = "key-file", value_name = "PATH", required = true)]
    pub key_files: Vec<PathBuf>,

    /// Refuse the member with this public key (`lanbridge pubkey <
    /// IDENTITY_FILE` prints it); repeatable. Revokes one member without
    /// changing the network key.
    #[arg(long = "refuse-member", value_name = "PUBKEY", value_parser = member_public_key)]
    pub refuse_members: Vec<[u8; 32]>,

    /// Peers silent for this many seconds are forgotten.
    #[arg(long, value_name = "SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub peer_timeout: u64,

    /// Keepalive interval the relay asks its peers to use, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub keepalive: u64,

    /// Ignored since protocol version 2: the relay sees no MACs; each member
    /// caps the MACs another member may own (1024).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_macs_per_peer: u64,

    #[command(flatten)]
    pub ops: OpsArgs,
}

/// `lanbridge edge`.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Read options from this TOML file: keys are the long flags with `_` for
    /// `-`. Required flags may come from it; a flag given here wins over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The relay, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub relay: String,

    /// The network key file.
    #[arg(long = "key-file", value_name = "PATH")]
    pub key_file: PathBuf,

    /// Keep this member's identity (its static key pair) in this file,
    /// created with mode 0600 if missing. Without it the identity is new on
    /// every start.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,

    /// Name of the TAP device to create (at most 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub tap: String,

    /// Address to put on the TAP, e.g. 10.10.0.2/24.
    #[arg(long, value_name = "CIDR")]
    pub address: Option<Cidr>,

    /// MAC address of the TAP (default: random, chosen by the kernel).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<MacAddr>,

    /// MTU of the TAP. Frames are fragmented in the protocol, so the default
    /// of 1500 works over a 1500-byte underlay.
    #[arg(long, value_name = "N", default_value_t = 1500, value_parser = clap::value_parser!(u32).range(576..=9000))]
    pub mtu: u32,

    #[command(flatten)]
    pub tuning: TuningArgs,

    #[command(flatten)]
    pub ops: OpsArgs,
}

/// `lanbridge bridge`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("overlay").required(true).args(["relay", "tap"])))]
pub struct BridgeArgs {
    /// Read options from this TOML file: keys are the long flags with `_` for
    /// `-`. Required flags may come from it; a flag given here wins over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The NIC whose LAN is shared. The LAN only ever sees this NIC's MAC.
    #[arg(long, value_name = "NAME")]
    pub iface: String,

    /// Share the LAN into the network of this relay (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", requires = "key_file")]
    pub relay: Option<String>,

    /// The network key file (with --relay).
    #[arg(long = "key-file", value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// Keep this member's identity (its static key pair) in this file,
    /// created with mode 0600 if missing. Without it the identity is new on
    /// every start. Only with --relay; a --tap bridge has no identity and
    /// ignores it.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,

    /// Instead of a relay, bridge the LAN to a local TAP of this name, e.g.
    /// for a VM or a namespace (VMware-style bridged networking).
    #[arg(long, value_name = "TAPNAME", conflicts_with_all = ["relay", "key_file"])]
    pub tap: Option<String>,

    /// Forward IPv6 router advertisements and redirects from virtual hosts
    /// onto the LAN, for a virtual router. By default they are dropped (RA
    /// guard, RFC 6105): no virtual host can give LAN hosts addresses or
    /// routes.
    #[arg(long)]
    pub allow_router_advertisements: bool,

    /// Forward DHCP server messages (DHCPv4 and DHCPv6) from virtual hosts
    /// onto the LAN, for a virtual DHCP server. By default they are dropped
    /// (DHCP snooping): no virtual host can hand out leases on the LAN.
    #[arg(long)]
    pub allow_dhcp_servers: bool,

    /// Let neighbour advertisements and redirects from virtual hosts name
    /// any target. By default a target that is the bridge host's or a live
    /// LAN host's address is dropped, and other targets are probed for
    /// first (ND inspection): no virtual host can redirect a LAN host's
    /// IPv6 address to the bridge.
    #[arg(long)]
    pub no_nd_inspection: bool,

    /// Don't join this host's own stack to the virtual hosts. By default the
    /// bridge adds a TAP (--host-tap) with host routes to the virtual
    /// addresses it has learned, so this host reaches them with its LAN
    /// addresses and they reach it; the LAN still sees only the NIC's MAC.
    #[arg(long)]
    pub no_host_access: bool,

    /// The name of the host-access TAP; default `lbh-` and the NIC's name,
    /// cut to 15 characters. It and its routes go away with the bridge.
    #[arg(long, value_name = "NAME", conflicts_with = "no_host_access")]
    pub host_tap: Option<String>,

    #[command(flatten)]
    pub tuning: TuningArgs,

    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Options shared by everything that talks to a relay.
#[derive(Debug, Args)]
pub struct TuningArgs {
    /// Largest UDP payload sent; frames are cut to fit. 1400 leaves room for
    /// IPv6, PPPoE and tunnels in the underlay.
    #[arg(long, value_name = "BYTES", default_value_t = 1400, value_parser = clap::value_parser!(u16).range(576..=65000))]
    pub max_datagram: u16,
    /// Run without the fast path: the TAP reads and writes one MTU-sized
    /// frame at a time (no vnet header, so no 64 KiB super-frames), received
    /// TCP segments are not put back together, and frames travel as Frame
    /// datagrams that the relay decrypts. Slower; for debugging, or a kernel
    /// without IFF_VNET_HDR.
    #[arg(long)]
    pub no_offload: bool,
    /// Leave the MSS option of TCP SYNs crossing the overlay as it is. By
    /// default it is lowered so that a full TCP segment fits one datagram
    /// of --max-datagram bytes (a lost datagram then costs one segment).
    #[arg(long)]
    pub no_mss_clamp: bool,
    /// Send everything through the relay. By default frames to a member
    /// this one talks to go directly to it once a probe through both NATs
    /// got an answer, and back through the relay when it stops answering.
    #[arg(long)]
    pub no_direct: bool,
    /// Rotate session keys after this many seconds (1 to 120). Hidden: for
    /// tests that want a key rotation during a transfer.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=120), hide = true)]
    pub rekey_after: u64,
}

/// An address with a prefix length, e.g. `10.0.0.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("expected ADDRESS/PREFIX like 10.0.0.1/24, got {s:?}"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("prefix length {prefix:?} is not a number from 0 to {max}")
            })?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The value parser of `--refuse-member`: a member's public key as 64 hex
/// characters.
fn member_public_key(text: &str) -> Result<[u8; 32], String> {
    parse_public_key(text).map_err(|e| {
        let hint = match e {
            KeyError::Length { found: 16 } => {
                " (16 characters look like a member ID; give the member's public key)"
            }
            _ => "",
        };
        format!(
            "not a member's public key: {}{hint}; `lanbridge pubkey < IDENTITY_FILE` prints one",
            hex_problem(&e, "")
        )
    })
}

/// What is wrong with a run of hex characters, without saying what kind of
/// key it was meant to be (KeyError's own text says "network key").
/// `after` names a prefix the positions and counts follow, if any.
fn hex_problem(e: &KeyError, after: &str) -> String {
    match e {
        KeyError::Length { found } => format!("expected 64 hex characters{after}, found {found}"),
        KeyError::NotHex { position, found } => {
            format!("{found:?} at position {position}{after} is not a hex digit")
        }
    }
}

/// Why a key file's text is no key, naming the form it started with.
fn key_file_problem(text: &str, e: &KeyError) -> String {
    if text.trim().starts_with(RELAY_KEY_PREFIX) {
        format!(
            "invalid relay key: {}",
            hex_problem(e, &format!(" after {RELAY_KEY_PREFIX}"))
        )
    } else {
        e.to_string()
    }
}

/// A key file's text, with errors that name the file.
fn read_key_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read key file {}: {}", path.display(), plain(&e)))
}

/// Reads what a key file holds: a network key or a relay key.
fn read_any_key(path: &Path) -> anyhow::Result<KeyFile> {
    let text = read_key_text(path)?;
    KeyFile::parse(&text).map_err(|e| {
        anyhow!(
            "invalid key file {}: {}",
            path.display(),
            key_file_problem(&text, &e)
        )
    })
}

/// Reads the network key of an edge or a bridge. A relay key file is
/// refused: it can't join a network.
pub fn read_member_key(path: &Path) -> anyhow::Result<NetworkKey> {
    match read_any_key(path)? {
        KeyFile::Network(key) => Ok(key),
        KeyFile::Relay(_) => bail!(
            "{} holds a relay key ({RELAY_KEY_PREFIX}…); edges and bridges need the network \
             key itself (lanbridge genkey); the relay key can't join a network",
            path.display()
        ),
    }
}

/// Reads a relay's key files, one network each: a relay key, or a network
/// key whose relay key is derived (with a warning per such file: the relay
/// needs only the relay key). Two files for the same network are an error.
pub fn read_relay_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<RelayKey>> {
    let mut keys: Vec<(RelayKey, &PathBuf)> = Vec::new();
    for path in paths {
        let key = match read_any_key(path)? {
            KeyFile::Relay(key) => key,
            KeyFile::Network(key) => {
                tracing::warn!(
                    "{} holds the network key; a relay needs only the relay key: \
                     `lanbridge relay-key < {}` (a relay with the network key could read and \
                     forge members' traffic)",
                    path.display(),
                    path.display()
                );
                RelayKey::derive(&key)
            }
        };
        if let Some((_, first)) = keys
            .iter()
            .find(|(k, _)| k.network_id() == key.network_id())
        {
            bail!(
                "key files {} and {} are for the same network",
                first.display(),
                path.display()
            );
        }
        keys.push((key, path));
    }
    Ok(keys.into_iter().map(|(k, _)| k).collect())
}

/// The most `relay-key` and `pubkey` read from stdin: a key file is 65
/// bytes, and a stray `< /dev/zero` must not fill the memory.
const STDIN_LIMIT: u64 = 4096;

/// Reads a key from stdin (`relay-key`, `pubkey`) as text; `example` shows
/// the user how to give it.
pub fn read_stdin_key(example: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(STDIN_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow!("cannot read stdin: {}", plain(&e)))?;
    stdin_text(bytes, example)
}

/// Checks what came on stdin: some text, not too much.
fn stdin_text(bytes: Vec<u8>, example: &str) -> anyhow::Result<String> {
    if bytes.len() as u64 > STDIN_LIMIT {
        bail!("stdin holds more than {STDIN_LIMIT} bytes: not a key file (e.g. `{example}`)");
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("stdin is not text: not a key file (e.g. `{example}`)"))?;
    if text.trim().is_empty() {
        bail!("stdin is empty; give the key file on it, e.g. `{example}`");
    }
    Ok(text)
}

/// `lanbridge relay-key`: the line to print for the network key in `text`.
pub fn relay_key_command(text: &str) -> anyhow::Result<String> {
    if text.trim().starts_with(RELAY_KEY_PREFIX) {
        bail!(
            "stdin holds a relay key already ({RELAY_KEY_PREFIX}…); `lanbridge relay-key` \
             takes the network key (lanbridge genkey) and prints its relay key"
        );
    }
    NetworkKey::parse(text)
        .map(|key| RelayKey::derive(&key).to_text())
        .map_err(|e| anyhow!("stdin holds no network key: {}", hex_problem(&e, "")))
}

/// `lanbridge pubkey`: the line to print for the identity file in `text`.
pub fn pubkey_command(text: &str) -> anyhow::Result<String> {
    if text.trim().starts_with(RELAY_KEY_PREFIX) {
        bail!(
            "stdin holds a relay key ({RELAY_KEY_PREFIX}…), not an identity file \
             (--identity-file of an edge or a bridge)"
        );
    }
    Identity::parse(text)
        .map(|identity| identity.public_hex())
        .map_err(|e| {
            anyhow!(
                "stdin holds no identity: {} (an identity file holds the private key)",
                hex_problem(&e, "")
            )
        })
}

/// The global subscriber of unit tests: interested in every call site, it
/// drops every event; see [`capture_logs`].
#[cfg(test)]
struct WantsEverything;

#[cfg(test)]
impl tracing::Subscriber for WantsEverything {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `f` with its log lines captured (without time or colour), for tests
/// that check what a user reads.
#[cfg(test)]
pub(crate) fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // Tests run in parallel, and tracing caches per call site whether any
    // subscriber wants it. A call site first reached on another thread
    // while this subscriber is being registered can cache "nobody" and
    // stay silent here (this failed in CI about one run in ten). A global
    // subscriber that wants every call site, and drops what it gets, keeps
    // every cache at "always", so only the thread's own subscriber decides.
    static ALWAYS: std::sync::Once = std::sync::Once::new();
    ALWAYS.call_once(|| {
        let _ = tracing::subscriber::set_global_default(WantsEverything);
    });

    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        f()
    });
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_rejects() {
        let c: Cidr = "10.0.0.1/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.1/24");
        assert!("fd00::1/64".parse::<Cidr>().is_ok());
        assert!("10.0.0.1".parse::<Cidr>().is_err());
        assert!("10.0.0.300/24".parse::<Cidr>().is_err());
        assert!("10.0.0.1/33".parse::<Cidr>().is_err());
        assert!("fd00::1/129".parse::<Cidr>().is_err());
    }

    /// A fresh directory for one test's files.
    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lanbridge-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn members_take_the_network_key_and_refuse_a_relay_key() {
        let d = dir("member");
        let key = NetworkKey::from_bytes([3; 32]);
        let net = write(&d, "net.key", &format!("{}\n", key.to_hex()));
        assert_eq!(read_member_key(&net).unwrap(), key);
        let relay = write(&d, "relay.key", &RelayKey::derive(&key).to_text());
        assert_eq!(
            read_member_key(&relay).unwrap_err().to_string(),
            format!(
                "{} holds a relay key (relay-key:…); edges and bridges need the network key \
                 itself (lanbridge genkey); the relay key can't join a network",
                relay.display()
            )
        );
        let bad = write(&d, "bad.key", "abcdef\n");
        assert_eq!(
            read_member_key(&bad).unwrap_err().to_string(),
            format!(
                "invalid key file {}: invalid network key: expected 64 hex characters, found 6",
                bad.display()
            )
        );
        let bad = write(&d, "bad-relay.key", "relay-key:abcdef\n");
        assert_eq!(
            read_member_key(&bad).unwrap_err().to_string(),
            format!(
                "invalid key file {}: invalid relay key: expected 64 hex characters after \
                 relay-key:, found 6",
                bad.display()
            )
        );
        let missing = d.join("missing.key");
        assert_eq!(
            read_member_key(&missing).unwrap_err().to_string(),
            format!(
                "cannot read key file {}: No such file or directory",
                missing.display()
            )
        );
    }

    #[test]
    fn relays_take_either_key_and_warn_about_the_network_key() {
        let d = dir("relay");
        let a = NetworkKey::from_bytes([1; 32]);
        let b = NetworkKey::from_bytes([2; 32]);
        let a_net = write(&d, "a.key", &a.to_hex());
        let b_relay = write(&d, "b-relay.key", &RelayKey::derive(&b).to_text());
        let (keys, logs) = capture_logs(|| read_relay_keys(&[a_net.clone(), b_relay.clone()]));
        assert_eq!(keys.unwrap(), [RelayKey::derive(&a), RelayKey::derive(&b)]);
        let warning = format!(
            "{} holds the network key; a relay needs only the relay key: `lanbridge relay-key < \
             {}` (a relay with the network key could read and forge members' traffic)",
            a_net.display(),
            a_net.display()
        );
        assert_eq!(logs.matches(&warning).count(), 1, "{logs}");
        assert_eq!(logs.lines().count(), 1, "{logs}");
        assert!(logs.contains("WARN"), "{logs}");

        // Only relay keys: not a word.
        let (keys, logs) = capture_logs(|| read_relay_keys(std::slice::from_ref(&b_relay)));
        assert_eq!(keys.unwrap().len(), 1);
        assert_eq!(logs, "");

        // The same network twice, in either form.
        let a_relay = write(&d, "a-relay.key", &RelayKey::derive(&a).to_text());
        assert_eq!(
            read_relay_keys(&[a_net.clone(), b_relay.clone(), a_relay.clone()])
                .unwrap_err()
                .to_string(),
            format!(
                "key files {} and {} are for the same network",
                a_net.display(),
                a_relay.display()
            )
        );
        assert!(read_relay_keys(&[b_relay.clone(), b_relay.clone()]).is_err());
        let bad = write(&d, "bad.key", "");
        assert!(read_relay_keys(&[b_relay, bad])
            .unwrap_err()
            .to_string()
            .starts_with("invalid key file"));
    }

    #[test]
    fn relay_key_command_prints_the_relay_key_or_says_why_not() {
        let key = NetworkKey::from_bytes([9; 32]);
        let line = relay_key_command(&format!("{}\n", key.to_hex())).unwrap();
        assert_eq!(line, RelayKey::derive(&key).to_text());
        assert!(line.starts_with("relay-key:"));
        assert_eq!(line.len(), "relay-key:".len() + 64);
        assert_eq!(
            relay_key_command("relay-key:zz").unwrap_err().to_string(),
            relay_key_command(&line).unwrap_err().to_string()
        );
        assert_eq!(
            relay_key_command(&line).unwrap_err().to_string(),
            "stdin holds a relay key already (relay-key:…); `lanbridge relay-key` takes the \
             network key (lanbridge genkey) and prints its relay key"
        );
        assert_eq!(
            relay_key_command("hello").unwrap_err().to_string(),
            "stdin holds no network key: expected 64 hex characters, found 5"
        );
    }

    #[test]
    fn pubkey_command_prints_the_public_key() {
        let identity = Identity::generate();
        assert_eq!(
            pubkey_command(&identity.to_text()).unwrap(),
            identity.public_hex()
        );
        assert_eq!(
            pubkey_command("abc").unwrap_err().to_string(),
            "stdin holds no identity: expected 64 hex characters, found 3 (an identity file \
             holds the private key)"
        );
        assert!(pubkey_command(&RelayKey::from_bytes([1; 32]).to_text())
            .unwrap_err()
            .to_string()
            .starts_with("stdin holds a relay key (relay-key:…), not an identity file"));
    }

    #[test]
    fn stdin_must_be_a_little_text() {
        let ex = "lanbridge relay-key < net.key";
        assert_eq!(stdin_text(b"x\n".to_vec(), ex).unwrap(), "x\n");
        assert_eq!(
            stdin_text(b" \n".to_vec(), ex).unwrap_err().to_string(),
            "stdin is empty; give the key file on it, e.g. `lanbridge relay-key < net.key`"
        );
        assert!(stdin_text(vec![0xff; 10], ex)
            .unwrap_err()
            .to_string()
            .starts_with("stdin is not text"));
        assert!(stdin_text(vec![b'a'; 4097], ex)
            .unwrap_err()
            .to_string()
            .starts_with("stdin holds more than 4096 bytes"));
    }

    #[test]
    fn refuse_member_takes_public_keys() {
        let identity = Identity::generate();
        let key = member_public_key(&identity.public_hex()).unwrap();
        assert_eq!(key, identity.keys().public);
        assert_eq!(
            member_public_key("zz").unwrap_err(),
            "not a member's public key: expected 64 hex characters, found 2; \
             `lanbridge pubkey < IDENTITY_FILE` prints one"
        );
        assert!(member_public_key(&identity.id().to_string())
            .unwrap_err()
            .contains("look like a member ID"));
        // Through clap: an error that names the flag.
        let e = Cli::try_parse_from([
            "lanbridge",
            "relay",
            "--listen",
            "127.0.0.1:1",
            "--key-file",
            "k",
            "--refuse-member",
            "nope",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("--refuse-member <PUBKEY>"), "{e}");
        let a = Identity::generate();
        let cli = Cli::try_parse_from([
            "lanbridge",
            "relay",
            "--listen",
            "127.0.0.1:1",
            "--key-file",
            "k",
            "--refuse-member",
            &a.public_hex(),
            "--refuse-member",
            &identity.public_hex(),
        ])
        .unwrap();
        let Command::Relay(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            args.refuse_members,
            [a.keys().public, identity.keys().public]
        );
    }

    #[test]
    fn rekey_after_is_hidden_and_bounded() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(
                [
                    &[
                        "lanbridge",
                        "edge",
                        "--relay",
                        "r:1",
                        "--key-file",
                        "k",
                        "--tap",
                        "t",
                    ][..],
                    extra,
                ]
                .concat(),
            )
        };
        let Command::Edge(args) = parse(&[]).unwrap().command else {
            panic!()
        };
        assert_eq!(args.tuning.rekey_after, 120);
        assert_eq!(args.identity_file, None);
        let Command::Edge(args) = parse(&["--rekey-after", "3"]).unwrap().command else {
            panic!()
        };
        assert_eq!(args.tuning.rekey_after, 3);
        assert!(parse(&["--rekey-after", "0"]).is_err());
        assert!(parse(&["--rekey-after", "121"]).is_err());
        use clap::CommandFactory;
        let help = Cli::command()
            .find_subcommand_mut("edge")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!help.contains("rekey"), "{help}");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
