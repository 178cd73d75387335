//! Configuration files: `--config FILE` (TOML) for `relay`, `edge` and
//! `bridge`.
//!
//! A file holds the role's own flags. A key is the long flag without `--` and
//! with `_` for `-` (`--key-file` is `key_file`, `--max-datagram` is
//! `max_datagram`). A value is a string or an integer (a boolean for a flag
//! without a value) and is checked by the flag's own clap value parser, so
//! ranges and formats are exactly those of the command line. A repeatable flag
//! (the relay's `key_file` and `refuse_member`) takes a string or an array of
//! strings. A relative path ([`PATH_KEYS`]: `key_file`, `identity_file`) is
//! relative to the directory of the config file. Hidden flags (`rekey_after`)
//! are accepted too, but not listed in messages.
//!
//! Precedence: a flag given on the command line, then the file, then the
//! built-in default. A file value is also dropped when the command line gives
//! a flag it conflicts with (`bridge --tap` drops the file's `relay` and
//! `key_file`). The exception are the lists in
//! [`ADDITIVE_KEYS`] (`refuse_member`): the file's values and the command
//! line's add up, so that a flag never lifts a refusal the file makes. The
//! surviving file values become `--flag=value` arguments
//! appended to the command line, which is parsed again, so the drivers get
//! ordinary [`RelayArgs`](crate::cli::RelayArgs) and friends.
//!
//! Every problem with a file is one line naming the file, the line and the
//! key, e.g. `edge.toml: line 5: invalid value for mtu: 70000 is not in
//! 576..=9000`.

use std::{
    error::Error as _,
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
};

use clap::{
    parser::ValueSource, Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches,
};
use toml::de::{DeTable, DeValue};

use crate::{cli::Cli, io::plain};

/// The subcommands that take `--config`.
const ROLES: [&str; 3] = ["relay", "edge", "bridge"];

/// Keys whose values are paths, relative to the config file's directory.
const PATH_KEYS: [&str; 2] = ["key_file", "identity_file"];

/// Repeatable keys whose file values the command line's add to rather than
/// replace: lists of refusals.
const ADDITIVE_KEYS: [&str; 1] = ["refuse_member"];

/// Why the command line could not become a [`Cli`].
#[derive(Debug)]
pub enum ArgsError {
    /// Rejected by clap, or `--help`/`--version`: call [`clap::Error::exit`].
    Clap(clap::Error),
    /// A problem with a config file: print it, exit 1.
    Config(ConfigError),
}

/// A problem with a config file, as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Parses the command line (with the binary's name first), merging in the
/// `--config` file of a role when one is given.
pub fn parse_args<I, T>(argv: I) -> Result<Cli, ArgsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // With a config file, what is required is decided after the merge.
    let mut cmd = Cli::command();
    if argv.iter().skip(1).any(is_config_flag) {
        cmd = relaxed(cmd);
    }
    let mut matches = cmd
        .try_get_matches_from_mut(argv.clone())
        .map_err(ArgsError::Clap)?;
    let config = match matches.subcommand() {
        Some((role, sub)) if ROLES.contains(&role) => sub
            .try_get_one::<PathBuf>("config")
            .ok()
            .flatten()
            .map(|path| (role.to_string(), path.clone(), sub.clone())),
        _ => None,
    };
    if let Some((role, path, sub)) = config {
        let role_cmd = cmd
            .find_subcommand(&role)
            .expect("every role is a subcommand");
        argv.extend(file_args(role_cmd, &sub, &path).map_err(ArgsError::Config)?);
        matches = cmd
            .try_get_matches_from_mut(argv)
            .map_err(ArgsError::Clap)?;
    }
    Cli::from_arg_matches(&matches).map_err(|e| ArgsError::Clap(e.format(&mut cmd)))
}

/// Whether a command-line word is `--config` (clap takes no abbreviations).
fn is_config_flag(word: &OsString) -> bool {
    word == "--config" || word.to_str().is_some_and(|w| w.starts_with("--config="))
}

/// `cmd` with nothing required and nothing requiring anything else in the
/// roles: [`file_args`] checks that after merging.
fn relaxed(cmd: Command) -> Command {
    cmd.mut_subcommands(|sub| {
        if !ROLES.contains(&sub.get_name()) {
            return sub;
        }
        let groups: Vec<clap::Id> = sub.get_groups().map(|g| g.get_id().clone()).collect();
        let mut sub = sub.mut_args(|a| {
            a.required(false)
                .requires(clap::builder::Resettable::<clap::Id>::Reset)
        });
        for group in groups {
            sub = sub.mut_group(group, |g| g.required(false));
        }
        sub
    })
}

/// The options a config file of `cmd` may set: (key, argument), in the
/// order of `--help`.
fn options(cmd: &Command) -> Vec<(String, &Arg)> {
    cmd.get_arguments()
        .filter(|a| !a.is_global_set() && a.get_id() != "config")
        .filter(|a| {
            !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
        })
        .filter_map(|a| Some((a.get_long()?.replace('-', "_"), a)))
        .collect()
}

/// Reads `path` and turns the values it sets, and that the command line
/// (`given`) doesn't, into command-line arguments for `cmd`.
fn file_args(cmd: &Command, given: &ArgMatches, path: &Path) -> Result<Vec<OsString>, ConfigError> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {file}: {}", plain(&e))))?;
    let at = |offset: usize, what: String| {
        ConfigError(format!("{file}: line {}: {what}", line_of(&text, offset)))
    };
    let table = DeTable::parse(&text).map_err(|e| {
        let message = e.message().lines().next().unwrap_or("").to_string();
        match e.span() {
            Some(span) => at(span.start, format!("invalid TOML: {message}")),
            None => ConfigError(format!("{file}: invalid TOML: {message}")),
        }
    })?;
    let options = options(cmd);
    let on_command_line =
        |arg: &Arg| given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine);
    let dir = path.parent().unwrap_or(Path::new(""));

    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    // Arguments the file sets, with the line of their key; and those of them
    // the command line doesn't override.
    let mut seen: Vec<(&Arg, usize)> = Vec::new();
    let mut from_file: Vec<&Arg> = Vec::new();
    let mut out = Vec::new();
    for (key, value) in entries {
        let start = key.span().start;
        let key = key.get_ref().as_ref();
        let Some((_, arg)) = options.iter().find(|(k, _)| k == key) else {
            let expected: Vec<&str> = options
                .iter()
                .filter(|(_, a)| !a.is_hide_set())
                .map(|(k, _)| k.as_str())
                .collect();
            return Err(at(
                start,
                format!(
                    "unknown key {key:?} (expected one of: {})",
                    expected.join(", ")
                ),
            ));
        };
        let long = arg.get_long().expect("options have a long name");
        let invalid =
            |offset: usize, why: String| at(offset, format!("invalid value for {key}: {why}"));

        // Check everything, also what the command line overrides.
        let mut args = Vec::new();
        if arg.get_action().takes_values() {
            for (word, offset) in values(value.get_ref(), value.span().start, arg)
                .map_err(|why| invalid(value.span().start, why))?
            {
                check(arg, &word).map_err(|why| invalid(offset, why))?;
                let mut a = OsString::from(format!("--{long}="));
                if PATH_KEYS.contains(&key) {
                    a.push(dir.join(&word));
                } else {
                    a.push(&word);
                }
                args.push(a);
            }
        } else {
            match value.get_ref() {
                DeValue::Boolean(true) => args.push(OsString::from(format!("--{long}"))),
                DeValue::Boolean(false) => {}
                other => {
                    return Err(invalid(
                        value.span().start,
                        format!("expected true or false, not {}", other.type_str()),
                    ))
                }
            }
        }

        let line = line_of(&text, start);
        if let Some((other, other_line)) = seen.iter().find(|(o, _)| conflict(cmd, arg, o)) {
            let other = other.get_long().unwrap_or_default().replace('-', "_");
            return Err(at(
                start,
                format!("{key} cannot be set together with {other} (line {other_line})"),
            ));
        }
        let overridden = (on_command_line(arg) && !ADDITIVE_KEYS.contains(&key))
            || options
                .iter()
                .any(|(_, o)| on_command_line(o) && conflict(cmd, arg, o));
        seen.push((arg, line));
        if !overridden {
            from_file.push(arg);
            out.extend(args);
        }
    }

    let present = |id: &str| {
        from_file.iter().any(|a| a.get_id() == id)
            || options
                .iter()
                .any(|(_, a)| a.get_id() == id && on_command_line(a))
    };
    for ids in required(cmd.get_name(), &present) {
        if ids.iter().any(|id| present(id)) {
            continue;
        }
        let names: Vec<&str> = ids
            .iter()
            .filter_map(|id| options.iter().find(|(_, a)| a.get_id() == *id))
            .map(|(k, _)| k.as_str())
            .collect();
        let flags: Vec<String> = names
            .iter()
            .map(|n| format!("--{}", n.replace('_', "-")))
            .collect();
        let names = names.join(" or ");
        return Err(ConfigError(format!(
            "missing {names}: give {} or set {names} in {file}",
            flags.join(" or ")
        )));
    }
    Ok(out)
}

/// What a role can't run without, by argument id: one of each list. This
/// repeats the requirements in cli.rs, which [`relaxed`] lifts.
fn required(role: &str, present: &dyn Fn(&str) -> bool) -> Vec<&'static [&'static str]> {
    match role {
        "relay" => vec![&["listen"], &["key_files"]],
        "edge" => vec![&["relay"], &["key_file"], &["tap"]],
        "bridge" if present("relay") => vec![&["iface"], &["key_file"]],
        "bridge" => vec![&["iface"], &["relay", "tap"]],
        _ => vec![],
    }
}

/// Whether `a` and `b` can't be given together.
fn conflict(cmd: &Command, a: &Arg, b: &Arg) -> bool {
    let one_way = |x: &Arg, y: &Arg| {
        cmd.get_arg_conflicts_with(x)
            .iter()
            .any(|c| c.get_id() == y.get_id())
    };
    one_way(a, b) || one_way(b, a)
}

/// The values of one key as text, with their byte offsets.
fn values(value: &DeValue<'_>, offset: usize, arg: &Arg) -> Result<Vec<(String, usize)>, String> {
    match value {
        DeValue::Array(items) if matches!(arg.get_action(), ArgAction::Append) => items
            .iter()
            .map(|item| Ok((scalar(item.get_ref())?, item.span().start)))
            .collect(),
        DeValue::Array(_) => Err("expected one value, not an array".into()),
        value => Ok(vec![(scalar(value)?, offset)]),
    }
}

/// A string, integer or boolean as the text a flag would carry.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|_| format!("integer {} is out of range", i.as_str())),
        DeValue::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string or an integer, not {}",
            other.type_str()
        )),
    }
}

/// Checks one value with the flag's own value parser.
fn check(arg: &Arg, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    let probe = Command::new("config").no_binary_name(true).arg(
        Arg::new("value")
            .long("value")
            .action(ArgAction::Set)
            .value_parser(arg.get_value_parser().clone()),
    );
    match probe.try_get_matches_from([format!("--value={value}")]) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.source() {
            Some(source) => source.to_string(),
            None => {
                let rendered = e.render().to_string();
                let first = rendered.lines().next().unwrap_or("").trim();
                first.strip_prefix("error: ").unwrap_or(first).to_string()
            }
        }),
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{BridgeArgs, Command as Role, EdgeArgs, RelayArgs};

    /// A fresh directory for one test's files.
    fn dir(test: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("lanbridge-config-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn parse(args: &[&str]) -> Result<Cli, String> {
        parse_args(std::iter::once("lanbridge").chain(args.iter().copied())).map_err(|e| match e {
            ArgsError::Config(e) => e.0,
            ArgsError::Clap(e) => format!("clap {:?}: {e}", e.kind()),
        })
    }

    fn err(args: &[&str]) -> String {
        match parse(args) {
            Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
            Err(e) => e,
        }
    }

    fn relay(args: &[&str]) -> RelayArgs {
        match parse(&[&["relay"], args].concat()).unwrap().command {
            Role::Relay(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn edge(args: &[&str]) -> EdgeArgs {
        match parse(&[&["edge"], args].concat()).unwrap().command {
            Role::Edge(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn bridge(args: &[&str]) -> BridgeArgs {
        match parse(&[&["bridge"], args].concat()).unwrap().command {
            Role::Bridge(a) => a,
            other => panic!("{other:?}"),
        }
    }

    const EDGE: &str = "relay = \"r.example:7171\"\nkey_file = \"net.key\"\ntap = \"lan0\"\n";

    #[test]
    fn file_beats_default_and_flag_beats_file() {
        let d = dir("merge");
        let f = write(&d, "edge.toml", &format!("{EDGE}mtu = 9000\n"));
        let a = edge(&["--config", &f]);
        assert_eq!(a.mtu, 9000, "file beats default");
        assert_eq!(
            a.tuning.max_datagram, 1400,
            "default where the file is silent"
        );
        assert_eq!(
            (a.relay.as_str(), a.tap.as_str()),
            ("r.example:7171", "lan0")
        );
        assert_eq!(a.address, None);

        // A flag wins, also one that repeats the default.
        let a = edge(&[
            "--config",
            &f,
            "--mtu",
            "1500",
            "--tap",
            "x0",
            "--max-datagram",
            "1200",
        ]);
        assert_eq!(
            (a.mtu, a.tap.as_str(), a.tuning.max_datagram),
            (1500, "x0", 1200)
        );
        assert_eq!(a.relay, "r.example:7171");
        // `--config=FILE` works too.
        assert_eq!(edge(&[&format!("--config={f}")]).mtu, 9000);
    }

    #[test]
    fn every_option_can_come_from_the_file() {
        let d = dir("every");
        let f = write(
            &d,
            "edge.toml",
            &format!(
                "{EDGE}address = \"10.0.0.2/24\"\nmac = \"02:00:00:00:00:02\"\nmtu = 1400\n\
                 max_datagram = 1300\nmetrics = \"127.0.0.1:9171\"\n\
                 identity_file = \"/var/lib/lanbridge/home.identity\"\nrekey_after = 5\n"
            ),
        );
        let a = edge(&["--config", &f]);
        assert_eq!(
            a.identity_file.as_deref(),
            Some(Path::new("/var/lib/lanbridge/home.identity"))
        );
        assert_eq!(a.tuning.rekey_after, 5);
        assert_eq!(a.address.unwrap().to_string(), "10.0.0.2/24");
        assert_eq!(a.mac.unwrap().to_string(), "02:00:00:00:00:02");
        assert_eq!((a.mtu, a.tuning.max_datagram), (1400, 1300));
        assert_eq!(a.ops.metrics.unwrap().to_string(), "127.0.0.1:9171");

        let f = write(
            &d,
            "relay.toml",
            "listen = \"[::]:7171\"\nkey_file = \"a.key\"\npeer_timeout = 60\nkeepalive = 0x0a\n\
             max_macs_per_peer = 10_000\nmetrics = \"127.0.0.1:9171\"\n\
             refuse_member = \"0101010101010101010101010101010101010101010101010101010101010101\"\n",
        );
        let a = relay(&["--config", &f]);
        assert_eq!(a.refuse_members, [[1; 32]]);
        assert_eq!(a.listen.to_string(), "[::]:7171");
        assert_eq!(
            (a.peer_timeout, a.keepalive, a.max_macs_per_peer),
            (60, 10, 10_000)
        );
        assert!(a.ops.metrics.is_some());

        let f = write(
            &d,
            "bridge.toml",
            "iface = \"eth1\"\ntap = \"vm0\"\nmax_datagram = 1000\n",
        );
        let a = bridge(&["--config", &f]);
        assert_eq!(
            (a.iface.as_str(), a.tap.as_deref(), a.relay),
            ("eth1", Some("vm0"), None)
        );
        assert_eq!(a.tuning.max_datagram, 1000);
        let f = write(
            &d,
            "bridge-relay.toml",
            "iface = \"eth1\"\nrelay = \"r:1\"\nkey_file = \"/k\"\nidentity_file = \"/i\"\n\
             rekey_after = 120\n",
        );
        let a = bridge(&["--config", &f]);
        assert_eq!(a.identity_file.as_deref(), Some(Path::new("/i")));
        assert_eq!(a.tuning.rekey_after, 120);
    }

    #[test]
    fn relative_key_files_are_relative_to_the_config_file() {
        let d = dir("relative");
        let f = write(&d, "edge.toml", EDGE);
        assert_eq!(edge(&["--config", &f]).key_file, d.join("net.key"));
        // A flag's path stays as given (relative to the working directory).
        assert_eq!(
            edge(&["--config", &f, "--key-file", "x.key"]).key_file,
            Path::new("x.key")
        );
        let f = write(
            &d,
            "abs.toml",
            "relay = \"r:1\"\nkey_file = \"/k/net.key\"\ntap = \"t\"\n",
        );
        assert_eq!(edge(&["--config", &f]).key_file, Path::new("/k/net.key"));
        // So is a relative identity_file.
        let f = write(
            &d,
            "id.toml",
            &format!("{EDGE}identity_file = \"state/home.identity\"\n"),
        );
        assert_eq!(
            edge(&["--config", &f]).identity_file,
            Some(d.join("state/home.identity"))
        );
        assert_eq!(
            edge(&["--config", &f, "--identity-file", "x.identity"]).identity_file,
            Some(PathBuf::from("x.identity"))
        );
    }

    #[test]
    fn refused_members_from_the_file_and_the_flags_add_up() {
        let d = dir("refuse");
        let hex = |b: u8| format!("{b:02x}").repeat(32);
        let f = write(
            &d,
            "relay.toml",
            &format!(
                "listen = \"0.0.0.0:7171\"\nkey_file = \"a.key\"\nrefuse_member = [\"{}\", \"{}\"]\n",
                hex(1),
                hex(2)
            ),
        );
        assert_eq!(relay(&["--config", &f]).refuse_members, [[1; 32], [2; 32]]);
        // A flag never lifts a refusal the file makes.
        assert_eq!(
            relay(&["--config", &f, "--refuse-member", &hex(3)]).refuse_members,
            [[3; 32], [1; 32], [2; 32]]
        );
        let f = write(
            &d,
            "none.toml",
            "listen = \"0.0.0.0:7171\"\nkey_file = \"a.key\"\nrefuse_member = []\n",
        );
        assert!(relay(&["--config", &f]).refuse_members.is_empty());
        let f = write(
            &d,
            "bad.toml",
            &format!(
                "listen = \"0.0.0.0:7171\"\nkey_file = \"a.key\"\nrefuse_member = [\n  \"{}\",\n  \"zz\",\n]\n",
                hex(1)
            ),
        );
        assert_eq!(
            err(&["relay", "--config", &f]),
            format!(
                "{f}: line 5: invalid value for refuse_member: not a member's public key: expected \
                 64 hex characters, found 2; `lanbridge pubkey < IDENTITY_FILE` prints one"
            )
        );
    }

    #[test]
    fn relay_key_file_is_a_string_or_an_array() {
        let d = dir("keys");
        let f = write(
            &d,
            "one.toml",
            "listen = \"0.0.0.0:7171\"\nkey_file = \"a.key\"\n",
        );
        assert_eq!(relay(&["--config", &f]).key_files, [d.join("a.key")]);
        let f = write(
            &d,
            "two.toml",
            "listen = \"0.0.0.0:7171\"\nkey_file = [\"a.key\", \"/b.key\"]\n",
        );
        assert_eq!(
            relay(&["--config", &f]).key_files,
            [d.join("a.key"), PathBuf::from("/b.key")]
        );
        // --key-file on the command line replaces the file's whole list.
        assert_eq!(
            relay(&["--config", &f, "--key-file", "c.key"]).key_files,
            [PathBuf::from("c.key")]
        );
    }

    #[test]
    fn required_options_from_flags_or_file() {
        let d = dir("required");
        let f = write(&d, "relay.toml", "key_file = \"a.key\"\n");
        assert_eq!(
            err(&["relay", "--config", &f]),
            format!("missing listen: give --listen or set listen in {f}")
        );
        assert_eq!(
            relay(&["--config", &f, "--listen", "127.0.0.1:1"])
                .listen
                .port(),
            1
        );
        let f = write(&d, "empty.toml", "");
        assert_eq!(
            err(&["relay", "--config", &f, "--listen", "127.0.0.1:1"]),
            format!("missing key_file: give --key-file or set key_file in {f}")
        );
        assert_eq!(
            err(&["edge", "--config", &f, "--relay", "r:1", "--key-file", "k"]),
            format!("missing tap: give --tap or set tap in {f}")
        );
        assert_eq!(
            err(&["bridge", "--config", &f, "--iface", "eth0"]),
            format!("missing relay or tap: give --relay or --tap or set relay or tap in {f}")
        );
        assert_eq!(
            err(&["bridge", "--config", &f, "--iface", "eth0", "--relay", "r:1"]),
            format!("missing key_file: give --key-file or set key_file in {f}")
        );
        // Without --config, clap's own checks are unchanged.
        assert!(err(&["relay", "--key-file", "k"]).starts_with("clap MissingRequiredArgument"));
        assert!(err(&["bridge", "--iface", "e", "--relay", "r:1"])
            .starts_with("clap MissingRequiredArgument"));
    }

    #[test]
    fn bridge_overlay_from_flags_replaces_the_files() {
        let d = dir("overlay");
        let f = write(
            &d,
            "b.toml",
            "iface = \"eth0\"\nrelay = \"r:1\"\nkey_file = \"net.key\"\n",
        );
        let a = bridge(&["--config", &f, "--tap", "vm0"]);
        assert_eq!(
            (a.relay, a.key_file, a.tap.as_deref()),
            (None, None, Some("vm0"))
        );
        let f = write(
            &d,
            "id.toml",
            "iface = \"eth0\"\nrelay = \"r:1\"\nkey_file = \"net.key\"\nidentity_file = \"x\"\n",
        );
        // identity_file is no overlay setting: kept (and unused with --tap),
        // so that the systemd unit can give --identity-file to every bridge.
        let a = bridge(&["--config", &f, "--tap", "vm0"]);
        assert_eq!(
            (a.identity_file, a.tap.as_deref()),
            (Some(d.join("x")), Some("vm0"))
        );
        let f = write(&d, "tap.toml", "iface = \"eth0\"\ntap = \"vm0\"\n");
        let a = bridge(&[
            "--config",
            &f,
            "--identity-file",
            "/var/lib/lanbridge/t.identity",
        ]);
        assert_eq!(a.tap.as_deref(), Some("vm0"));
        let f = write(&d, "t.toml", "iface = \"eth0\"\ntap = \"vm0\"\n");
        let a = bridge(&["--config", &f, "--relay", "r:2", "--key-file", "/k"]);
        assert_eq!((a.relay.as_deref(), a.tap), (Some("r:2"), None));
        let f = write(
            &d,
            "both.toml",
            "iface = \"eth0\"\nrelay = \"r:1\"\n\ntap = \"vm0\"\n",
        );
        assert_eq!(
            err(&["bridge", "--config", &f]),
            format!("{f}: line 4: tap cannot be set together with relay (line 2)")
        );
    }

    #[test]
    fn error_messages() {
        let d = dir("errors");
        let cases: &[(&str, &str, &str)] = &[
            (
                "unknown.toml",
                "relay = \"r:1\"\n# comment\n\nmtuu = 1400\n",
                "line 4: unknown key \"mtuu\" (expected one of: relay, key_file, identity_file, tap, \
                 address, mac, mtu, max_datagram, no_offload, no_mss_clamp, no_direct, metrics)",
            ),
            ("range.toml", &format!("{EDGE}\nmtu = 70000\n"), "line 5: invalid value for mtu: 70000 is not in 576..=9000"),
            (
                "address.toml",
                "address = \"10.0.0.300/24\"",
                "line 1: invalid value for address: \"10.0.0.300\" is not an IP address",
            ),
            ("mac.toml", "\n\nmac = \"zz\"", "line 3: invalid value for mac: invalid MAC address \"zz\": expected six hex bytes like 02:00:00:00:00:01"),
            ("metrics.toml", "metrics = \"nonsense\"", "line 1: invalid value for metrics: invalid socket address syntax"),
            ("toml.toml", "relay = \"r:1\"\nkey_file = \"net.key\n", "line 2: invalid TOML: invalid basic string, expected `\"`"),
            ("dup.toml", "tap = \"a\"\ntap = \"b\"\n", "line 2: invalid TOML: duplicate key"),
            ("array.toml", "mtu = [1500]", "line 1: invalid value for mtu: expected one value, not an array"),
            ("float.toml", "mtu = 1500.0", "line 1: invalid value for mtu: expected a string or an integer, not float"),
            ("empty.toml", "tap = \"\"", "line 1: invalid value for tap: must not be empty"),
            ("table.toml", "[edge]\nmtu = 1500\n", "line 1: unknown key \"edge\" (expected one of: relay, key_file, identity_file, tap, address, mac, mtu, max_datagram, no_offload, no_mss_clamp, no_direct, metrics)"),
            ("section.toml", "[mtu]\n", "line 1: invalid value for mtu: expected a string or an integer, not table"),
        ];
        for (name, text, expected) in cases {
            let f = write(&d, name, text);
            assert_eq!(
                err(&["edge", "--config", &f]),
                format!("{f}: {expected}"),
                "{name}"
            );
        }
        // A bad value is an error even where a flag overrides it.
        let f = write(&d, "over.toml", &format!("{EDGE}mtu = 70000\n"));
        assert_eq!(
            err(&["edge", "--config", &f, "--mtu", "1500"]),
            format!("{f}: line 4: invalid value for mtu: 70000 is not in 576..=9000")
        );
        let missing = d.join("nope.toml");
        let missing = missing.to_str().unwrap();
        assert_eq!(
            err(&["relay", "--config", missing]),
            format!("cannot read config file {missing}: No such file or directory")
        );
        // The relay's list of keys.
        let f = write(&d, "relay.toml", "mtu = 1500\n");
        assert_eq!(
            err(&["relay", "--config", &f]),
            format!(
                "{f}: line 1: unknown key \"mtu\" (expected one of: listen, key_file, refuse_member, \
                 peer_timeout, keepalive, max_macs_per_peer, metrics)"
            )
        );
        let f = write(
            &d,
            "relay-range.toml",
            "listen = \"0.0.0.0:1\"\nkey_file = \"k\"\npeer_timeout = 1\n",
        );
        assert_eq!(
            err(&["relay", "--config", &f]),
            format!("{f}: line 3: invalid value for peer_timeout: 1 is not in 2..=3600")
        );
    }

    /// The example files parse with the real loader, every option is in
    /// them, and every commented-out setting is valid too.
    #[test]
    fn examples_parse() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let d = dir("examples");
        for role in ROLES {
            let path = examples.join(format!("{role}.toml"));
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed = parse(&[role, "--config", path.to_str().unwrap()]);
            assert!(parsed.is_ok(), "{role}: {parsed:?}");

            let mut cmd = Cli::command();
            cmd.build();
            let keys: Vec<String> = options(cmd.find_subcommand(role).unwrap())
                .into_iter()
                .filter(|(_, a)| !a.is_hide_set())
                .map(|(k, _)| k)
                .collect();
            for key in &keys {
                let set = text
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = ")));
                assert!(set, "examples/{role}.toml doesn't show {key}");
            }

            // Uncomment each commented setting; comment out what it
            // conflicts with.
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let Some(setting) = line.strip_prefix("# ") else {
                    continue;
                };
                let Some(key) = keys
                    .iter()
                    .find(|k| setting.starts_with(&format!("{k} = ")))
                else {
                    continue;
                };
                // It replaces an active setting of the same key.
                let mut variant: Vec<String> = lines
                    .iter()
                    .map(|l| match l.starts_with(&format!("{key} = ")) {
                        true => format!("# {l}"),
                        false => l.to_string(),
                    })
                    .collect();
                variant[i] = setting.to_string();
                loop {
                    let f = write(&d, &format!("{role}-{i}.toml"), &variant.join("\n"));
                    match parse(&[role, "--config", &f]) {
                        Ok(_) => break,
                        Err(e) if e.contains("cannot be set together with") => {
                            let n: usize = e
                                .rsplit("(line ")
                                .next()
                                .unwrap()
                                .trim_end_matches(')')
                                .parse()
                                .unwrap();
                            variant[n - 1] = format!("# {}", variant[n - 1]);
                        }
                        Err(e) => panic!("examples/{role}.toml with {setting:?}: {e}"),
                    }
                }
            }
        }
    }

    #[test]
    fn help_snapshots() {
        let mut cmd = Cli::command().term_width(100);
        cmd.build();
        insta::assert_snapshot!("help", cmd.render_help().to_string());
        for sub in cmd.get_subcommands_mut() {
            let name = format!("help_{}", sub.get_name());
            insta::assert_snapshot!(name, sub.render_help().to_string());
        }
    }
}
