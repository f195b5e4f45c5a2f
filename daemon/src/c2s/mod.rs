//! Client-to-server streams: negotiation (TLS, SASL, bind) then the bound session.

#[cfg(test)]
mod footprint_tests;
mod link_door;
mod negotiate;
pub mod outbound;
mod sasl_exchange;
pub mod session;
pub mod stream;

pub use negotiate::serve;

use crate::config::LimitsConfig;
use crate::xml::XmlLimits;

pub fn xml_limits(l: &LimitsConfig) -> XmlLimits {
    XmlLimits {
        max_stanza_bytes: l.max_stanza_bytes,
        max_depth: l.max_depth,
        max_attributes: l.max_attributes,
        max_name_bytes: l.max_name_bytes,
    }
}
