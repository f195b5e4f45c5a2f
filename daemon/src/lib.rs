//! `hearthd`: Hearth's XMPP server, as a library so `hearthctl`, `hearth-web` and `hearth-acme`
//! share its configuration, storage and control protocol instead of re-implementing them.

pub mod c2s;
pub mod certs;
pub mod config;
pub mod control;
pub mod delivery;
pub mod dev;
pub mod domains;
pub mod fsutil;
#[cfg(test)]
pub mod harness;
pub mod hooks;
pub mod iq_tracker;
pub mod jid;
pub mod listener;
pub mod logging;
pub mod loopback_port;
pub mod modules;
pub mod privileges;
pub mod s2s;
pub mod sasl;
#[cfg(test)]
mod seam_tests;
pub mod server;
pub mod sessions;
pub mod setup;
pub mod stanza;
pub mod storage;
pub mod throttle;
pub mod timefmt;
pub mod tls;
pub mod xml;
