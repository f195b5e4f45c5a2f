//! `hearthd`: Hearth's XMPP server, as a library so `hearthctl`, `hearth-web` and `hearth-acme`
//! share its configuration, storage and control protocol instead of re-implementing them.

pub mod config;
pub mod fsutil;
pub mod jid;
pub mod certs;
