//! Configuration files: `--config FILE` (TOML) for `relay`, `edge` and
//! `bridge`.
//!
//! A file holds the role's own flags. A key is the long flag without `--` and
//! with `_` for `-` (`--key-file` is `key_file`, `--max-datagram` is
//! `max_datagram`). A value is a string or an integer (a boolean for a flag
//! without a value) and is checked by the flag's own clap value parser, so
//! ranges and formats are exactly those of the command line. A repeatable flag
//! (the relay's `key_file`) takes a string or an array of strings. A relative
//! `key_file` is relative to the directory of the config file.
//!
//! Precedence: a flag given on the command line, then the file, then the
//! built-in default. A file value is also dropped when the command line gives
//! a flag it conflicts with (`bridge --tap` drops the file's `relay` and
//! `key_file`). The surviving file values become `--flag=value` arguments
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
            let expected: Vec<&str> = options.iter().map(|(k, _)| k.as_str()).collect();
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
            for (text, offset) in values(value.get_ref(), value.span().start, arg)
                .map_err(|why| invalid(value.span().start, why))?
            {
                check(arg, &text).map_err(|why| invalid(offset, why))?;
                let mut a = OsString::from(format!("--{long}="));
                if key == "key_file" {
                    a.push(dir.join(&text));
                } else {
                    a.push(&text);
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
        let overridden = on_command_line(arg)
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
