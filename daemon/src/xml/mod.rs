//! The one XML tree type used everywhere (`Element`), its serialiser, and the hardened
//! incremental stream reader.

mod element;
mod idle_buf;
mod reader;

pub use element::{escape_attr, escape_text, Element, Node};
pub use reader::{ReadProgress, XmlError, XmlEvent, XmlLimits, XmlReader};

/// Namespaces the core needs by name; modules keep their own.
pub mod ns {
    pub const CLIENT: &str = "jabber:client";
    pub const SERVER: &str = "jabber:server";
    pub const STREAMS: &str = "http://etherx.jabber.org/streams";
    pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
}

/// Parses one element serialised by us earlier (a stored stanza or vCard) back into a tree.
/// Limits are generous (the text was checked when it first arrived) but still bounded.
pub async fn parse_fragment(xml: &str) -> Option<Element> {
    let doc = format!(
        "<stream:stream xmlns:stream='{}' xmlns='{}'>{xml}",
        ns::STREAMS,
        ns::CLIENT
    );
    let limits = XmlLimits {
        max_stanza_bytes: 1 << 20,
        max_depth: 64,
        max_attributes: 64,
        max_name_bytes: 256,
    };
    let mut reader = XmlReader::new(doc.as_bytes(), limits);
    match (reader.next().await, reader.next().await) {
        (Ok(XmlEvent::StreamStart(_)), Ok(XmlEvent::Stanza(e))) => Some(e),
        _ => None,
    }
}
