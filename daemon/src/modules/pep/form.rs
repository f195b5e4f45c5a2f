//! Node configuration (XEP-0060 §16.4 `pubsub#node_config`) and the publish-options form
//! (§7.1.5): parsing a client's data form into settings, and rendering the settings back.
//! Pure functions, so the fuzz target `pep_form` can drive them directly.

use crate::xml::Element;

pub const DATA_FORMS: &str = "jabber:x:data";
pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// Who may read a node's items and receive its notifications (XEP-0060 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessModel {
    Open,
    Presence,
    Roster,
    /// Only the owner: this server keeps no whitelist beyond the owner.
    Whitelist,
}

impl AccessModel {
    pub fn parse(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }
}

/// When a new subscriber (an available contact) gets the last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSubAndPresence,
}

impl SendLast {
    pub fn parse(s: &str) -> Option<SendLast> {
        match s {
            "never" => Some(SendLast::Never),
            "on_sub" | "on_sub_and_presence" => Some(SendLast::OnSubAndPresence),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }
}

/// A node's settings. `max_items` is already capped by the server's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    pub access: AccessModel,
    pub persist: bool,
    pub max_items: u32,
    pub send_last: SendLast,
}

impl NodeConfig {
    /// XEP-0163 §4.3 defaults: presence access, one item kept.
    pub fn default_pep() -> NodeConfig {
        NodeConfig {
            access: AccessModel::Presence,
            persist: true,
            max_items: 1,
            send_last: SendLast::OnSubAndPresence,
        }
    }
}

/// Why a form was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// Not a `jabber:x:data` form of the expected FORM_TYPE, or a value that does not parse:
    /// the text says which field.
    Bad(String),
    /// A field this server does not support (XEP-0060 says refuse rather than ignore for
    /// publish-options preconditions).
    Unsupported(String),
}

/// The fields of a submitted form, by var, first value each (all fields here are single).
fn fields(form: &Element, form_type: &str) -> Result<Vec<(String, String)>, FormError> {
    if !form.is("x", DATA_FORMS) {
        return Err(FormError::Bad("expected a jabber:x:data form".into()));
    }
    if !matches!(form.attr("type"), Some("submit") | None) {
        return Err(FormError::Bad("the form must have type='submit'".into()));
    }
    let mut out = Vec::new();
    for f in form.elements().filter(|e| e.is("field", DATA_FORMS)) {
        let Some(var) = f.attr("var") else {
            return Err(FormError::Bad("a field without var".into()));
        };
        let value = f
            .child("value", DATA_FORMS)
            .map(Element::text)
            .unwrap_or_default();
        if var == "FORM_TYPE" {
            if value != form_type {
                return Err(FormError::Bad(format!("FORM_TYPE must be {form_type}")));
            }
            continue;
        }
        out.push((var.to_string(), value));
    }
    Ok(out)
}

fn parse_bool(var: &str, v: &str) -> Result<bool, FormError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(FormError::Bad(format!("{var} must be true or false"))),
    }
}

/// `pubsub#max_items`: a number or `max` (the server's limit); capped at `limit`.
fn parse_max_items(v: &str, limit: u32) -> Result<u32, FormError> {
    if v == "max" {
        return Ok(limit);
    }
    match v.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(FormError::Bad(
            "pubsub#max_items must be a positive number or 'max'".into(),
        )),
        Ok(n) => Ok(n.min(limit as u64) as u32),
    }
}

/// One setting, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Access(AccessModel),
    Persist(bool),
    MaxItems(u32),
    SendLast(SendLast),
}

impl Setting {
    pub fn apply(self, c: &mut NodeConfig) {
        match self {
            Setting::Access(a) => c.access = a,
            Setting::Persist(p) => c.persist = p,
            Setting::MaxItems(n) => c.max_items = n,
            Setting::SendLast(s) => c.send_last = s,
        }
    }
    /// Whether a node already configured `c` meets this precondition.
    pub fn holds(self, c: &NodeConfig) -> bool {
        match self {
            Setting::Access(a) => c.access == a,
            Setting::Persist(p) => c.persist == p,
            Setting::MaxItems(n) => c.max_items == n,
            Setting::SendLast(s) => c.send_last == s,
        }
    }
}

/// Parses a publish-options or node-config form into settings. Fields this server does not
/// implement are refused for publish-options (a precondition cannot be checked) and ignored
/// for node configuration only when their value is empty.
pub fn parse(
    form: &Element,
    form_type: &str,
    max_items_limit: u32,
) -> Result<Vec<Setting>, FormError> {
    let mut out = Vec::new();
    for (var, v) in fields(form, form_type)? {
        let s = match var.as_str() {
            "pubsub#access_model" => Setting::Access(AccessModel::parse(&v).ok_or_else(|| {
                FormError::Unsupported(format!("pubsub#access_model '{v}' is not supported"))
            })?),
            "pubsub#persist_items" => Setting::Persist(parse_bool(&var, &v)?),
            "pubsub#max_items" => Setting::MaxItems(parse_max_items(&v, max_items_limit)?),
            "pubsub#send_last_published_item" => {
                Setting::SendLast(SendLast::parse(&v).ok_or_else(|| {
                    FormError::Unsupported(format!(
                        "pubsub#send_last_published_item '{v}' is not supported"
                    ))
                })?)
            }
            // Harmless ones clients send along; this server always delivers payloads.
            "pubsub#deliver_payloads" | "pubsub#notify_retract" if v != "0" && v != "false" => {
                continue
            }
            _ => return Err(FormError::Unsupported(format!("{var} is not supported"))),
        };
        out.push(s);
    }
    Ok(out)
}

fn field(var: &str, kind: &str, value: &str) -> Element {
    Element::new("field", DATA_FORMS)
        .with_attr("var", var)
        .with_attr("type", kind)
        .with_child(Element::new("value", DATA_FORMS).with_text(value))
}

/// The node configuration form (XEP-0060 §8.2.1), as the owner sees it.
pub fn render(c: &NodeConfig) -> Element {
    let mut access = field("pubsub#access_model", "list-single", c.access.as_str());
    for a in ["open", "presence", "roster", "whitelist"] {
        access.push_child(
            Element::new("option", DATA_FORMS)
                .with_child(Element::new("value", DATA_FORMS).with_text(a)),
        );
    }
    Element::new("x", DATA_FORMS)
        .with_attr("type", "form")
        .with_child(field("FORM_TYPE", "hidden", NODE_CONFIG))
        .with_child(access)
        .with_child(field(
            "pubsub#persist_items",
            "boolean",
            if c.persist { "1" } else { "0" },
        ))
        .with_child(field(
            "pubsub#max_items",
            "text-single",
            &c.max_items.to_string(),
        ))
        .with_child(field(
            "pubsub#send_last_published_item",
            "list-single",
            c.send_last.as_str(),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(ty: &str, f: &[(&str, &str)]) -> Element {
        let mut x = Element::new("x", DATA_FORMS)
            .with_attr("type", "submit")
            .with_child(field("FORM_TYPE", "hidden", ty));
        for (k, v) in f {
            x.push_child(field(k, "text-single", v));
        }
        x
    }

    #[test]
    fn publish_options_parse_and_cap() {
        let s = parse(
            &form(
                PUBLISH_OPTIONS,
                &[("pubsub#access_model", "open"), ("pubsub#max_items", "max")],
            ),
            PUBLISH_OPTIONS,
            50,
        )
        .unwrap();
        assert_eq!(
            s,
            vec![Setting::Access(AccessModel::Open), Setting::MaxItems(50)]
        );
        let s = parse(
            &form(PUBLISH_OPTIONS, &[("pubsub#max_items", "1000")]),
            PUBLISH_OPTIONS,
            50,
        )
        .unwrap();
        assert_eq!(s, vec![Setting::MaxItems(50)]);
    }

    #[test]
    fn bad_forms_are_refused_with_the_field_named() {
        let e = parse(&form(NODE_CONFIG, &[]), PUBLISH_OPTIONS, 5).unwrap_err();
        assert!(matches!(e, FormError::Bad(t) if t.contains("FORM_TYPE")));
        let e = parse(
            &form(PUBLISH_OPTIONS, &[("pubsub#max_items", "0")]),
            PUBLISH_OPTIONS,
            5,
        )
        .unwrap_err();
        assert!(matches!(e, FormError::Bad(t) if t.contains("max_items")));
        let e = parse(
            &form(PUBLISH_OPTIONS, &[("pubsub#access_model", "authorize")]),
            PUBLISH_OPTIONS,
            5,
        )
        .unwrap_err();
        assert!(matches!(e, FormError::Unsupported(_)));
    }

    #[test]
    fn rendered_config_parses_back_to_itself() {
        let c = NodeConfig {
            access: AccessModel::Roster,
            persist: false,
            max_items: 7,
            send_last: SendLast::Never,
        };
        let mut x = render(&c);
        x.set_attr("type", "submit");
        // The form has option children; parse takes first values only.
        let mut back = NodeConfig::default_pep();
        for s in parse(&x, NODE_CONFIG, 10).unwrap() {
            s.apply(&mut back);
        }
        assert_eq!(back, c);
    }
}
