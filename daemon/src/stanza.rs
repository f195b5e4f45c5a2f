//! Helpers for the three stanza kinds: addressing, results and errors (RFC 6120 §8).

use crate::jid::Jid;
use crate::xml::{ns, Element};

/// A stanza error (RFC 6120 §8.3): type and defined condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: &'static str,
    pub condition: &'static str,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §8.3.4), as (name, namespace).
    pub app: Option<(&'static str, &'static str)>,
}

impl StanzaError {
    pub fn new(kind: &'static str, condition: &'static str) -> StanzaError {
        StanzaError {
            kind,
            condition,
            text: None,
            app: None,
        }
    }
    pub fn with_text(mut self, text: impl Into<String>) -> StanzaError {
        self.text = Some(text.into());
        self
    }
    pub fn with_app_condition(mut self, name: &'static str, ns: &'static str) -> StanzaError {
        self.app = Some((name, ns));
        self
    }
    pub fn service_unavailable() -> StanzaError {
        StanzaError::new("cancel", "service-unavailable")
    }
    pub fn bad_request() -> StanzaError {
        StanzaError::new("modify", "bad-request")
    }
    pub fn forbidden() -> StanzaError {
        StanzaError::new("auth", "forbidden")
    }
    pub fn not_allowed() -> StanzaError {
        StanzaError::new("cancel", "not-allowed")
    }
    pub fn item_not_found() -> StanzaError {
        StanzaError::new("cancel", "item-not-found")
    }
    pub fn internal() -> StanzaError {
        StanzaError::new("wait", "internal-server-error")
    }
    pub fn feature_not_implemented() -> StanzaError {
        StanzaError::new("cancel", "feature-not-implemented")
    }
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("error", ns::CLIENT)
            .with_attr("type", self.kind)
            .with_child(Element::new(self.condition, ns::STANZA_ERRORS));
        if let Some(t) = &self.text {
            e.push_child(
                Element::new("text", ns::STANZA_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(t.clone()),
            );
        }
        if let Some((name, ns)) = self.app {
            e.push_child(Element::new(name, ns));
        }
        e
    }
}

pub fn is_iq(e: &Element) -> bool {
    e.name == "iq" && (e.ns == ns::CLIENT || e.ns == ns::SERVER)
}
pub fn is_message(e: &Element) -> bool {
    e.name == "message" && (e.ns == ns::CLIENT || e.ns == ns::SERVER)
}
pub fn is_presence(e: &Element) -> bool {
    e.name == "presence" && (e.ns == ns::CLIENT || e.ns == ns::SERVER)
}

pub fn stanza_type(e: &Element) -> &str {
    e.attr("type").unwrap_or(match e.name.as_str() {
        "message" => "normal",
        "presence" => "available",
        _ => "",
    })
}

pub fn to_jid(e: &Element) -> Option<Result<Jid, crate::jid::JidError>> {
    e.attr("to").map(Jid::parse)
}

pub fn from_jid(e: &Element) -> Option<Jid> {
    e.attr("from").and_then(|f| Jid::parse(f).ok())
}

/// The error reply to a stanza: addresses swapped, original children kept for context
/// (except for IQs, whose payload the requester has), `type='error'`. None for stanzas that
/// must not be answered with an error (errors themselves, RFC 6120 §8.3.1).
pub fn error_reply(original: &Element, err: &StanzaError) -> Option<Element> {
    if original.attr("type") == Some("error") {
        return None;
    }
    let mut reply = Element::new(&original.name, &original.ns);
    if let Some(id) = original.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = original.attr("to") {
        reply.set_attr("from", from);
    }
    if let Some(to) = original.attr("from") {
        reply.set_attr("to", to);
    }
    reply.set_attr("type", "error");
    if !is_iq(original) {
        reply.children = original.children.iter().take(8).cloned().collect();
    }
    reply.push_child(err.to_element());
    Some(reply)
}

/// An IQ result for `request`, optionally carrying a payload.
pub fn iq_result(request: &Element, payload: Option<Element>) -> Element {
    let mut reply = Element::new("iq", &request.ns).with_attr("type", "result");
    if let Some(id) = request.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = request.attr("to") {
        reply.set_attr("from", from);
    }
    if let Some(to) = request.attr("from") {
        reply.set_attr("to", to);
    }
    if let Some(p) = payload {
        reply.push_child(p);
    }
    reply
}

/// A random identifier for stream ids and server-generated resources.
pub fn random_id(bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    if getrandom::getrandom(&mut buf).is_err() {
        // Identifiers are not secrets; a clock fallback keeps the server up.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf = t.as_nanos().to_le_bytes()[..bytes.min(16)].to_vec();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_and_never_answers_errors() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "1")
            .with_attr("from", "a@b/c")
            .with_attr("to", "b")
            .with_child(Element::new("query", "urn:x"));
        let r = error_reply(&iq, &StanzaError::service_unavailable()).unwrap();
        assert_eq!(
            r.to_xml(ns::CLIENT),
            "<iq id='1' from='b' to='a@b/c' type='error'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
        assert!(error_reply(&r, &StanzaError::service_unavailable()).is_none());
    }
}
