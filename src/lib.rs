//! lanbridge: hosts anywhere and whole physical LANs on one Ethernet segment.
//!
//! `core` holds every decision as pure code over byte buffers with time passed
//! in; `io` holds thin adapters over kernel objects; the drivers (`relay`,
//! `edge`, `bridge`) connect the two and are the only places with event loops.

pub mod bridge;
pub mod cli;
pub mod config;
pub mod control;
pub mod core;
pub mod demo;
pub mod edge;
pub mod host_access;
pub mod identity;
pub mod io;
pub mod lab;
pub mod metrics;
pub mod relay;
pub mod report;
pub mod signals;
pub mod status;
pub mod uplink;
