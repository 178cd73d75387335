//! Namespace scenarios: real programs in network namespaces built by the
//! harness (see harness/mod.rs). Needs root; skipped otherwise (fails under
//! `CI=true`).

mod bridge;
mod cli;
mod config;
mod demo;
mod direct;
mod edge;
mod fastpath;
mod guard;
mod harness;
mod hostaccess;
mod lan;
mod lossy;
mod overlay;
mod security;
mod selftest;
mod status;
mod tap_vnet;
