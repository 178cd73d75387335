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

impl Shutdown {
    /// Runs a start-up step (a DNS lookup, say) unless a signal comes
    /// first: then `Ok(None)`, and the caller exits cleanly.
    pub async fn unless_stopped<T>(
        &mut self,
        step: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<Option<T>> {
        tokio::select! {
            r = step => r.map(Some),
            sig = self.recv() => {
                tracing::info!("{sig} during start-up: stopping");
                Ok(None)
            }
        }
    }
}
