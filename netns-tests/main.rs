//! Namespace scenarios: see harness.rs
