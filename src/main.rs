use std::process::ExitCode;

use lanbridge::{
    cli::Command,
    config::{parse_args, ArgsError},
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(ArgsError::Clap(e)) => e.exit(),
        Err(ArgsError::Config(e)) => {
            eprintln!("lanbridge: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Genkey => {
            println!("{}", lanbridge::core::wire::NetworkKey::generate().to_hex());
            Ok(())
        }
        Command::RelayKey => lanbridge::cli::read_stdin_key("lanbridge relay-key < net.key")
            .and_then(|text| lanbridge::cli::relay_key_command(&text))
            .and_then(print_line),
        Command::Pubkey => lanbridge::cli::read_stdin_key("lanbridge pubkey < home.identity")
            .and_then(|text| lanbridge::cli::pubkey_command(&text))
            .and_then(print_line),
        Command::Relay(args) => run(lanbridge::relay::run(args)),
        Command::Edge(args) => run(lanbridge::edge::run(args)),
        Command::Bridge(args) => run(lanbridge::bridge::run(args)),
        Command::Demo(args) => lanbridge::demo::run(args),
        Command::Status(args) => lanbridge::control::status_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lanbridge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one line to stdout; a closed stdout is an error, not a panic.
fn print_line(line: String) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout(), "{line}")
        .map_err(|e| anyhow::anyhow!("cannot write to stdout: {}", lanbridge::io::plain(&e)))
}

/// Runs a component on a single-threaded runtime: one core is plenty for
/// the I/O, and it keeps ordering simple.
fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
