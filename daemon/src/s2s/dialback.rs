//! XEP-0220 Server Dialback, always inside TLS: the fallback when a peer cannot authenticate
//! with SASL EXTERNAL. The originating server sends a key derived from a secret only it knows
//! (XEP-0185: HMAC-SHA256 keyed with SHA-256 of the secret, over the receiving domain, the
//! originating domain and the stream id); the receiving server asks the originating domain's
//! authoritative server, found through DNS, whether the key is right.
//!
//! Everything dialback-specific lives in this file: the namespaces, the key, and the
//! elements sent and recognised.

use crate::xml::{escape_attr, escape_text, Element};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The namespace of `<db:result/>` and `<db:verify/>`.
pub const NS: &str = "jabber:server:dialback";
/// The stream feature that says dialback (with error support) is offered.
pub const FEATURE_NS: &str = "urn:xmpp:features:dialback";

/// The feature element a receiving server offers.
pub fn feature() -> Element {
    Element::new("dialback", FEATURE_NS).with_child(Element::new("errors", FEATURE_NS))
}

/// Whether a peer offers dialback: in its features, or by declaring the namespace in its
/// stream header (servers from before the feature existed).
pub fn offered(header: &Element, features: &Element) -> bool {
    features.child("dialback", FEATURE_NS).is_some()
        || header
            .attrs
            .iter()
            .any(|(k, v)| k.starts_with("xmlns:") && v == NS)
}

/// The dialback key (XEP-0185 §3).
pub fn key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    let hashed = Sha256::digest(secret);
    let hex_secret = hex(&hashed);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(hex_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(receiving.as_bytes());
    mac.update(b" ");
    mac.update(originating.as_bytes());
    mac.update(b" ");
    mac.update(stream_id.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Compares two keys in constant time.
pub fn same_key(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<db:result/>` carrying a key (originating → receiving).
pub fn result_request(from: &str, to: &str, key: &str) -> String {
    format!(
        "<db:result from='{}' to='{}'>{}</db:result>",
        escape_attr(from),
        escape_attr(to),
        escape_text(key)
    )
}

/// `<db:result type='valid|invalid'/>` (receiving → originating).
pub fn result_answer(from: &str, to: &str, valid: bool) -> String {
    format!(
        "<db:result from='{}' to='{}' type='{}'/>",
        escape_attr(from),
        escape_attr(to),
        if valid { "valid" } else { "invalid" }
    )
}

/// `<db:verify/>` asking the authoritative server about a key.
pub fn verify_request(from: &str, to: &str, id: &str, key: &str) -> String {
    format!(
        "<db:verify from='{}' to='{}' id='{}'>{}</db:verify>",
        escape_attr(from),
        escape_attr(to),
        escape_attr(id),
        escape_text(key)
    )
}

/// The authoritative server's answer to `<db:verify/>`.
pub fn verify_answer(from: &str, to: &str, id: &str, valid: bool) -> String {
    format!(
        "<db:verify from='{}' to='{}' id='{}' type='{}'/>",
        escape_attr(from),
        escape_attr(to),
        escape_attr(id),
        if valid { "valid" } else { "invalid" }
    )
}

/// A dialback element read from a stream, checked for the attributes it needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Dialback {
    /// A `<db:result/>` with a key: the peer wants to send as `from` to our `to`.
    ResultRequest {
        from: String,
        to: String,
        key: String,
    },
    /// The answer to our `<db:result/>`.
    ResultAnswer {
        from: String,
        to: String,
        valid: bool,
    },
    /// A `<db:verify/>` with a key: is this our key for that stream?
    VerifyRequest {
        from: String,
        to: String,
        id: String,
        key: String,
    },
    /// The answer to our `<db:verify/>`.
    VerifyAnswer {
        from: String,
        to: String,
        id: String,
        valid: bool,
    },
}

/// Reads a dialback element; `None` if it is not one, `Some(Err)` if it is malformed.
pub fn parse(el: &Element) -> Option<Result<Dialback, &'static str>> {
    if el.ns != NS || !matches!(el.name.as_str(), "result" | "verify") {
        return None;
    }
    let attr = |n: &str| el.attr(n).map(str::to_string);
    Some((|| {
        let from = attr("from").ok_or("dialback element without from")?;
        let to = attr("to").ok_or("dialback element without to")?;
        let valid = match el.attr("type") {
            None => None,
            Some("valid") => Some(true),
            Some("invalid") | Some("error") => Some(false),
            Some(_) => return Err("unknown dialback type"),
        };
        let key = el.text().trim().to_string();
        match (el.name.as_str(), valid) {
            ("result", None) if !key.is_empty() => Ok(Dialback::ResultRequest { from, to, key }),
            ("result", Some(valid)) => Ok(Dialback::ResultAnswer { from, to, valid }),
            ("verify", v) => {
                let id = attr("id").ok_or("db:verify without id")?;
                match v {
                    None if !key.is_empty() => Ok(Dialback::VerifyRequest { from, to, id, key }),
                    Some(valid) => Ok(Dialback::VerifyAnswer {
                        from,
                        to,
                        id,
                        valid,
                    }),
                    None => Err("db:verify without a key"),
                }
            }
            _ => Err("db:result without a key"),
        }
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_follows_xep_0185_example() {
        // Computed independently (Python's hmac over the hex SHA-256 of the secret) for XEP-0185's
        // example names: secret "s3cr3tf0rd14lb4ck", receiving example.net, originating
        // example.com, stream id D60000229F.
        assert_eq!(
            key(
                b"s3cr3tf0rd14lb4ck",
                "example.net",
                "example.com",
                "D60000229F"
            ),
            "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"
        );
        assert!(same_key(
            &key(b"a", "x", "y", "1"),
            &key(b"a", "x", "y", "1")
        ));
        assert!(!same_key(
            &key(b"a", "x", "y", "1"),
            &key(b"a", "x", "y", "2")
        ));
    }

    #[test]
    fn parses_what_it_writes_and_refuses_half_elements() {
        let el = |name: &str, attrs: &[(&str, &str)], text: &str| {
            let mut e = Element::new(name, NS);
            for (k, v) in attrs {
                e.set_attr(k, *v);
            }
            if !text.is_empty() {
                e = e.with_text(text);
            }
            e
        };
        assert_eq!(
            parse(&el("result", &[("from", "a"), ("to", "b")], "k")),
            Some(Ok(Dialback::ResultRequest {
                from: "a".into(),
                to: "b".into(),
                key: "k".into()
            }))
        );
        assert_eq!(
            parse(&el(
                "verify",
                &[("from", "a"), ("to", "b"), ("id", "i"), ("type", "valid")],
                ""
            )),
            Some(Ok(Dialback::VerifyAnswer {
                from: "a".into(),
                to: "b".into(),
                id: "i".into(),
                valid: true
            }))
        );
        assert!(matches!(
            parse(&el("result", &[("to", "b")], "k")),
            Some(Err(_))
        ));
        assert!(matches!(
            parse(&el("result", &[("from", "a"), ("to", "b")], "")),
            Some(Err(_))
        ));
        assert!(matches!(
            parse(&el("verify", &[("from", "a"), ("to", "b")], "k")),
            Some(Err(_))
        ));
        assert!(parse(&Element::new("message", "jabber:server")).is_none());
    }
}
