//! Namespace scenarios: real programs in network namespaces built by the
//! harness (see harness/mod.rs). Needs root; skipped otherwise (fails under
//! `CI=true`).

mod cli;
mod edge;
mod harness;
mod overlay;
mod selftest;
