//! `Element`: a small owned XML tree (name, namespace, attributes, children, text).
//!
//! Namespaces are resolved on input, so a module matches on `(name, ns)` and never sees
//! prefixes. On output an element states `xmlns` only where it differs from its parent, which
//! gives the usual compact XMPP form.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_string(),
            ns: ns.to_string(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: adds or replaces an attribute.
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder: adds a child element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: adds a text node.
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.to_string(), value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) {
        self.attrs.retain(|(k, _)| k != name);
    }

    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Child elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child with this name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// Removes every child with this name and namespace.
    pub fn remove_children(&mut self, name: &str, ns: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.is(name, ns)));
    }

    /// The first child element (IQ payloads have exactly one).
    pub fn first_element(&self) -> Option<&Element> {
        self.elements().next()
    }

    /// The concatenated direct text content.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    /// Serialises with `parent_ns` as the namespace in scope (e.g. `jabber:client` for stanzas
    /// sent on a client stream).
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            let _ = write!(out, " xmlns='{}'", escape_attr(&self.ns));
        }
        for (k, v) in &self.attrs {
            let _ = write!(out, " {}='{}'", k, escape_attr(v));
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => out.push_str(&escape_text(t)),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serialised form with `parent_ns` in scope.
    pub fn to_xml(&self, parent_ns: &str) -> String {
        let mut s = String::with_capacity(128);
        self.write_to(&mut s, parent_ns);
        s
    }
}

pub fn escape_text(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>']) {
        return s.into();
    }
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .into()
}

pub fn escape_attr(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>', '\'', '"']) {
        return s.into();
    }
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_compactly_and_escapes() {
        let m = Element::new("message", "jabber:client")
            .with_attr("to", "a@b")
            .with_attr("id", "x'<&")
            .with_child(Element::new("body", "jabber:client").with_text("1 < 2 & 3"))
            .with_child(Element::new(
                "active",
                "http://jabber.org/protocol/chatstates",
            ));
        assert_eq!(
            m.to_xml("jabber:client"),
            "<message to='a@b' id='x&apos;&lt;&amp;'><body>1 &lt; 2 &amp; 3</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );
    }

    #[test]
    fn finds_children() {
        let iq = Element::new("iq", "jabber:client")
            .with_child(Element::new("query", "jabber:iq:roster"));
        assert!(iq.child("query", "jabber:iq:roster").is_some());
        assert!(iq.child("query", "other").is_none());
        assert_eq!(iq.first_element().unwrap().name, "query");
    }
}
