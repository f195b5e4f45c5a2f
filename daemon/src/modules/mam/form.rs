//! The archive query a client sends (XEP-0313 §4.1): a XEP-0004 form with the filters and a
//! XEP-0059 `<set/>` with the page wanted, parsed into a [`Query`]. Everything a client can get
//! wrong becomes a `bad-request` whose text says what and where, never a panic.

use crate::jid::Jid;
use crate::stanza::StanzaError;
use crate::xml::Element;

pub const NS: &str = "urn:xmpp:mam:2";
pub const NS_EXTENDED: &str = "urn:xmpp:mam:2#extended";
pub const DATA: &str = "jabber:x:data";
pub const RSM: &str = "http://jabber.org/protocol/rsm";

/// Results per page when the client does not say.
pub const DEFAULT_PAGE: u32 = 50;
/// Results per page at most, whatever the client asks: one page is one burst to the socket.
pub const MAX_PAGE: u32 = 250;
/// Values of the `ids` field at most.
pub const MAX_IDS: usize = MAX_PAGE as usize;
/// Longest `queryid` or archive id accepted (ours are 16 characters).
const MAX_ID_LEN: usize = 256;

/// The fields a query form may carry, as offered in the form a client asks for.
pub const FIELDS: &[(&str, &str)] = &[
    ("with", "jid-single"),
    ("start", "text-single"),
    ("end", "text-single"),
    ("before-id", "text-single"),
    ("after-id", "text-single"),
    ("ids", "text-multi"),
];

/// A parsed archive query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// Echoed in every result so the client can tell queries apart.
    pub query_id: Option<String>,
    /// Only messages with this JID (all its resources when bare).
    pub with: Option<Jid>,
    /// Only messages at or after / at or before these instants (seconds since the epoch).
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Only messages after / before these archive ids (the form's `after-id`/`before-id` and
    /// the `<set/>`'s `<after>`/`<before>`: both bounds apply).
    pub after: Vec<String>,
    pub before: Vec<String>,
    /// Only these archive ids (`#extended`).
    pub ids: Vec<String>,
    /// Results per page (`MAX_PAGE` at most).
    pub max: u32,
    /// Page from the end: the `<set/>` had `<before/>` (empty: the last page).
    pub backwards: bool,
    /// `#extended` `<flip-page/>`: the page's results newest first.
    pub flip: bool,
}

fn bad(text: String) -> StanzaError {
    StanzaError::bad_request().with_text(text)
}

/// Parses the `<query xmlns='urn:xmpp:mam:2'/>` of an IQ set.
pub fn parse_query(query: &Element) -> Result<Query, StanzaError> {
    let mut q = Query {
        max: DEFAULT_PAGE,
        ..Query::default()
    };
    if let Some(id) = query.attr("queryid") {
        q.query_id = Some(bounded(id, "queryid")?.to_string());
    }
    for child in query.elements() {
        match (child.name.as_str(), child.ns.as_str()) {
            ("x", DATA) => parse_form(child, &mut q)?,
            ("set", RSM) => parse_set(child, &mut q)?,
            ("flip-page", NS) => q.flip = true,
            (name, ns) => {
                return Err(bad(format!(
                    "<{name} xmlns='{ns}'/> has no meaning in an archive query"
                )))
            }
        }
    }
    Ok(q)
}

fn bounded<'a>(value: &'a str, what: &str) -> Result<&'a str, StanzaError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(bad(format!(
            "{what} must be 1 to {MAX_ID_LEN} characters long"
        )));
    }
    Ok(value)
}

fn parse_form(form: &Element, q: &mut Query) -> Result<(), StanzaError> {
    match form.attr("type") {
        Some("submit") | None => {}
        Some(other) => {
            return Err(bad(format!(
                "the query form has type '{other}'; it must be 'submit'"
            )))
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for field in form.elements() {
        if !field.is("field", DATA) {
            continue;
        }
        let Some(var) = field.attr("var") else {
            return Err(bad("a field of the query form has no 'var'".into()));
        };
        if seen.contains(&var) {
            return Err(bad(format!(
                "field '{var}' appears twice in the query form"
            )));
        }
        seen.push(var);
        let values: Vec<String> = field
            .elements()
            .filter(|v| v.is("value", DATA))
            .map(Element::text)
            .collect();
        if var == "ids" {
            if values.len() > MAX_IDS {
                return Err(bad(format!(
                    "field 'ids' has {} values; at most {MAX_IDS} are allowed",
                    values.len()
                )));
            }
            for v in values {
                q.ids.push(bounded(&v, "each value of 'ids'")?.to_string());
            }
            continue;
        }
        let value = match values.as_slice() {
            [] => continue,
            [v] => v.trim(),
            _ => {
                return Err(bad(format!(
                    "field '{var}' takes one value, not {}",
                    values.len()
                )))
            }
        };
        match var {
            "FORM_TYPE" if value == NS => {}
            "FORM_TYPE" => {
                return Err(bad(format!(
                    "FORM_TYPE is '{value}'; an archive query uses '{NS}'"
                )))
            }
            "with" => {
                q.with =
                    Some(Jid::parse(value).map_err(|e| {
                        bad(format!("field 'with' is not a JID ('{value}'): {}", e.0))
                    })?)
            }
            "start" | "end" => {
                let t = crate::timefmt::parse_xep0082(value).ok_or_else(|| {
                    bad(format!(
                        "field '{var}' is not a XEP-0082 date and time like 2026-11-25T21:00:00Z: '{value}'"
                    ))
                })?;
                if var == "start" {
                    q.start = Some(t);
                } else {
                    q.end = Some(t);
                }
            }
            "after-id" => q.after.push(bounded(value, "after-id")?.to_string()),
            "before-id" => q.before.push(bounded(value, "before-id")?.to_string()),
            other => {
                let known: Vec<_> = FIELDS.iter().map(|f| f.0).collect();
                return Err(bad(format!(
                    "field '{other}' is not supported; the archive knows {}",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn parse_set(set: &Element, q: &mut Query) -> Result<(), StanzaError> {
    for child in set.elements() {
        if child.ns != RSM {
            continue;
        }
        let text = child.text();
        let text = text.trim();
        match child.name.as_str() {
            "max" => {
                let n: u32 = text
                    .parse()
                    .map_err(|_| bad(format!("<max/> must be a whole number, not '{text}'")))?;
                q.max = n.min(MAX_PAGE);
            }
            "after" => q.after.push(bounded(text, "<after/>")?.to_string()),
            "before" => {
                q.backwards = true;
                if !text.is_empty() {
                    q.before.push(bounded(text, "<before/>")?.to_string());
                }
            }
            "index" => {
                return Err(StanzaError::feature_not_implemented()
                    .with_text("paging by <index/> is not supported; use <after/> or <before/>"))
            }
            other => {
                return Err(bad(format!(
                    "<{other}/> is not part of a result set request"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &[&str])]) -> Element {
        let mut x = Element::new("x", DATA)
            .with_attr("type", "submit")
            .with_child(
                Element::new("field", DATA)
                    .with_attr("var", "FORM_TYPE")
                    .with_child(Element::new("value", DATA).with_text(NS)),
            );
        for (var, values) in fields {
            let mut f = Element::new("field", DATA).with_attr("var", *var);
            for v in *values {
                f.push_child(Element::new("value", DATA).with_text(*v));
            }
            x.push_child(f);
        }
        x
    }

    fn set(children: &[(&str, &str)]) -> Element {
        let mut s = Element::new("set", RSM);
        for (name, text) in children {
            s.push_child(Element::new(name, RSM).with_text(*text));
        }
        s
    }

    fn query(children: Vec<Element>) -> Element {
        let mut q = Element::new("query", NS).with_attr("queryid", "q1");
        for c in children {
            q.push_child(c);
        }
        q
    }

    fn text_of(e: StanzaError) -> String {
        format!("{e:?}")
    }

    #[test]
    fn a_full_query_parses() {
        let q = parse_query(&query(vec![
            form(&[
                ("with", &["bob@example.test"]),
                ("start", &["2026-11-25T00:00:00Z"]),
                ("end", &["2026-11-26T00:00:00Z"]),
                ("after-id", &["a1"]),
                ("before-id", &["b1"]),
                ("ids", &["x", "y"]),
            ]),
            set(&[("max", "10"), ("before", "b2")]),
            Element::new("flip-page", NS),
        ]))
        .unwrap();
        assert_eq!(q.query_id.as_deref(), Some("q1"));
        assert_eq!(q.with.unwrap().to_string(), "bob@example.test");
        assert_eq!(q.start, Some(1_795_564_800));
        assert_eq!(q.end, Some(1_795_564_800 + 86_400));
        assert_eq!(q.after, vec!["a1"]);
        assert_eq!(q.before, vec!["b1", "b2"]);
        assert_eq!(q.ids, vec!["x", "y"]);
        assert_eq!(q.max, 10);
        assert!(q.backwards && q.flip);
    }

    #[test]
    fn defaults_bounds_and_the_last_page() {
        let q = parse_query(&Element::new("query", NS)).unwrap();
        assert_eq!(q.max, DEFAULT_PAGE);
        assert!(!q.backwards && q.query_id.is_none());
        let q = parse_query(&query(vec![set(&[("max", "100000"), ("before", "")])])).unwrap();
        assert_eq!(q.max, MAX_PAGE);
        assert!(q.backwards && q.before.is_empty());
        // An empty field is no filter.
        let q = parse_query(&query(vec![form(&[("with", &[])])])).unwrap();
        assert!(q.with.is_none());
    }

    #[test]
    fn malformed_queries_say_what_is_wrong() {
        let cases: Vec<(Element, &str)> = vec![
            (
                query(vec![form(&[("with", &["not a jid@@"])])]),
                "field 'with' is not a JID",
            ),
            (
                query(vec![form(&[("start", &["yesterday"])])]),
                "field 'start' is not a XEP-0082",
            ),
            (
                query(vec![form(&[("end", &["2026-13-01T00:00:00Z"])])]),
                "field 'end'",
            ),
            (
                query(vec![form(&[("colour", &["red"])])]),
                "field 'colour' is not supported",
            ),
            (
                query(vec![form(&[("with", &["a@b", "c@d"])])]),
                "takes one value, not 2",
            ),
            (
                query(vec![form(&[("with", &["a@b"]), ("with", &["a@b"])])]),
                "appears twice",
            ),
            (
                query(vec![set(&[("max", "-1")])]),
                "<max/> must be a whole number",
            ),
            (query(vec![set(&[("after", "")])]), "<after/> must be 1 to"),
            (query(vec![set(&[("bogus", "")])]), "<bogus/> is not part"),
            (
                query(vec![Element::new("x", DATA).with_attr("type", "form")]),
                "it must be 'submit'",
            ),
            (
                query(vec![
                    Element::new("x", DATA).with_child(Element::new("field", DATA))
                ]),
                "no 'var'",
            ),
            (
                query(vec![Element::new("other", "urn:t")]),
                "no meaning in an archive query",
            ),
            (
                Element::new("query", NS).with_attr("queryid", "x".repeat(300)),
                "queryid must be",
            ),
        ];
        for (q, want) in cases {
            let e = parse_query(&q).expect_err(want);
            assert_eq!(e.condition, "bad-request", "{want}");
            assert!(text_of(e.clone()).contains(want), "{want}: {e:?}");
        }
        let mut form_type = form(&[]);
        if let Some(crate::xml::Node::Element(f)) = form_type.children.first_mut() {
            f.children.clear();
            f.push_child(Element::new("value", DATA).with_text("urn:other"));
        }
        let e = parse_query(&query(vec![form_type])).unwrap_err();
        assert!(text_of(e).contains("FORM_TYPE is 'urn:other'"));
        let e = parse_query(&query(vec![set(&[("index", "3")])])).unwrap_err();
        assert_eq!(e.condition, "feature-not-implemented");
        let many: Vec<String> = (0..=MAX_IDS).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = parse_query(&query(vec![form(&[("ids", &many)])])).unwrap_err();
        assert!(text_of(e).contains("at most 250"));
    }
}
