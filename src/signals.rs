//! SIGINT/SIGTERM as a future, for the drivers' `select!`.

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Resolves when SIGINT or SIGTERM arrives.
pub struct Shutdown {
    int: Signal,
    term: Signal,
}

impl Shutdown {
    /// Installs the handlers; must run inside a tokio runtime.
    pub fn new() -> anyhow::Result<Shutdown> {
        Ok(Shutdown {
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
        })
    }

    /// Waits for either signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
