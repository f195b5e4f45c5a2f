//! Shared harness for Hearth's end-to-end tests: real processes, real peers.

pub mod agent;
pub mod browser;
pub mod federation;
pub mod flaky;
pub mod pebble;
pub mod prosody_rig;
pub mod raw;
pub mod server;
