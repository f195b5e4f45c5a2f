//! The room configuration form (XEP-0045 §10.2, FORM_TYPE `muc#roomconfig`): what the owner is
//! shown and how a submitted form becomes a [`RoomConfig`]. Unknown fields are ignored (clients
//! echo what they were shown, and other servers' fields); a known field with a value that does
//! not fit is an error naming the field, never a panic and never a silent default.

use super::room::{PmPolicy, RoomConfig, Whois};
use crate::xml::Element;

pub const DATA: &str = "jabber:x:data";
pub const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// Longest room name, description or password accepted.
const MAX_TEXT: usize = 1024;

/// What the server allows whatever the owner asks (`[modules.muc]`).
#[derive(Debug, Clone, Copy)]
pub struct FormLimits {
    pub max_users: u32,
    pub max_history: u32,
}

fn field(var: &str, kind: &str, label: &str, value: &str) -> Element {
    Element::new("field", DATA)
        .with_attr("var", var)
        .with_attr("type", kind)
        .with_attr("label", label)
        .with_child(Element::new("value", DATA).with_text(value))
}

fn list(var: &str, label: &str, value: &str, options: &[&str]) -> Element {
    let mut f = field(var, "list-single", label, value);
    for o in options {
        f.push_child(
            Element::new("option", DATA)
                .with_attr("label", *o)
                .with_child(Element::new("value", DATA).with_text(*o)),
        );
    }
    f
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// The form an owner is shown, filled with the room's settings.
pub fn render(c: &RoomConfig, limits: FormLimits) -> Element {
    let users = [10, 20, 30, 50, 100, 200, 500, 1000];
    let mut user_options: Vec<String> = users
        .iter()
        .filter(|n| **n <= limits.max_users)
        .map(u32::to_string)
        .collect();
    if !user_options.contains(&c.max_users.to_string()) {
        user_options.push(c.max_users.to_string());
    }
    let user_refs: Vec<&str> = user_options.iter().map(String::as_str).collect();
    Element::new("x", DATA)
        .with_attr("type", "form")
        .with_child(Element::new("title", DATA).with_text("Room configuration"))
        .with_child(
            Element::new("field", DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", DATA).with_text(ROOMCONFIG)),
        )
        .with_child(field(
            "muc#roomconfig_roomname",
            "text-single",
            "Name",
            &c.name,
        ))
        .with_child(field(
            "muc#roomconfig_roomdesc",
            "text-single",
            "Description",
            &c.description,
        ))
        .with_child(field(
            "muc#roomconfig_persistentroom",
            "boolean",
            "Keep the room when everybody has left",
            flag(c.persistent),
        ))
        .with_child(field(
            "muc#roomconfig_publicroom",
            "boolean",
            "List the room publicly",
            flag(c.public),
        ))
        .with_child(field(
            "muc#roomconfig_membersonly",
            "boolean",
            "Members only",
            flag(c.members_only),
        ))
        .with_child(field(
            "muc#roomconfig_moderatedroom",
            "boolean",
            "Only participants may speak",
            flag(c.moderated),
        ))
        .with_child(field(
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            "Password required to enter",
            flag(c.password.is_some()),
        ))
        .with_child(field(
            "muc#roomconfig_roomsecret",
            "text-private",
            "Password",
            c.password.as_deref().unwrap_or(""),
        ))
        .with_child(list(
            "muc#roomconfig_whois",
            "Who may see members' addresses",
            match c.whois {
                Whois::Moderators => "moderators",
                Whois::Anyone => "anyone",
            },
            &["moderators", "anyone"],
        ))
        .with_child(field(
            "muc#roomconfig_allowinvites",
            "boolean",
            "Occupants may invite others",
            flag(c.allow_invites),
        ))
        .with_child(field(
            "muc#roomconfig_changesubject",
            "boolean",
            "Occupants may change the subject",
            flag(c.change_subject),
        ))
        .with_child(field(
            "muc#maxhistoryfetch",
            "text-single",
            "Messages shown on entering",
            &c.history_length.to_string(),
        ))
        .with_child(list(
            "muc#roomconfig_maxusers",
            "Most occupants",
            &c.max_users.to_string(),
            &user_refs,
        ))
        .with_child(list(
            "muc#roomconfig_allowpm",
            "Who may send private messages",
            c.allow_pm.as_str(),
            &["anyone", "participants", "moderators", "none"],
        ))
}

fn values(f: &Element) -> Vec<String> {
    f.elements()
        .filter(|v| v.is("value", DATA))
        .map(Element::text)
        .collect()
}

fn parse_bool(var: &str, v: &str) -> Result<bool, String> {
    match v.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        other => Err(format!(
            "{var}: '{other}' is not a boolean (1/0, true/false)"
        )),
    }
}

fn parse_count(var: &str, v: &str, max: u32) -> Result<u32, String> {
    let n: u32 = v
        .trim()
        .parse()
        .map_err(|_| format!("{var}: '{}' is not a whole number", v.trim()))?;
    if n > max {
        return Err(format!(
            "{var}: {n} is more than this server allows ({max})"
        ));
    }
    Ok(n)
}

fn text(var: &str, v: &str) -> Result<String, String> {
    if v.len() > MAX_TEXT {
        return Err(format!("{var}: longer than {MAX_TEXT} bytes"));
    }
    Ok(v.to_string())
}

/// A submitted form applied to `current`. `Ok` holds the new settings.
pub fn parse(x: &Element, current: &RoomConfig, limits: FormLimits) -> Result<RoomConfig, String> {
    if !x.is("x", DATA) {
        return Err("the configuration must be a jabber:x:data form".into());
    }
    match x.attr("type") {
        Some("submit") => {}
        other => {
            return Err(format!(
                "a form of type '{}' cannot configure a room",
                other.unwrap_or("")
            ))
        }
    }
    let mut c = current.clone();
    let mut protected = None;
    let mut secret = None;
    for f in x.elements().filter(|f| f.is("field", DATA)) {
        let var = f.attr("var").unwrap_or("");
        let vals = values(f);
        let one = vals.first().map(String::as_str).unwrap_or("");
        match var {
            "FORM_TYPE" if one != ROOMCONFIG => {
                return Err(format!("FORM_TYPE '{one}' is not {ROOMCONFIG}"));
            }
            "muc#roomconfig_roomname" => c.name = text(var, one)?,
            "muc#roomconfig_roomdesc" => c.description = text(var, one)?,
            "muc#roomconfig_persistentroom" => c.persistent = parse_bool(var, one)?,
            "muc#roomconfig_publicroom" => c.public = parse_bool(var, one)?,
            "muc#roomconfig_membersonly" => c.members_only = parse_bool(var, one)?,
            "muc#roomconfig_moderatedroom" => c.moderated = parse_bool(var, one)?,
            "muc#roomconfig_passwordprotectedroom" => protected = Some(parse_bool(var, one)?),
            "muc#roomconfig_roomsecret" => secret = Some(text(var, one)?),
            "muc#roomconfig_whois" => {
                c.whois = match one {
                    "moderators" => Whois::Moderators,
                    "anyone" => Whois::Anyone,
                    other => return Err(format!("{var}: '{other}' is not moderators or anyone")),
                }
            }
            "muc#roomconfig_allowinvites" => c.allow_invites = parse_bool(var, one)?,
            "muc#roomconfig_changesubject" => c.change_subject = parse_bool(var, one)?,
            "muc#maxhistoryfetch" | "muc#roomconfig_historylength" => {
                c.history_length = parse_count(var, one, limits.max_history)?
            }
            "muc#roomconfig_maxusers" => {
                let n = parse_count(var, one, limits.max_users)?;
                if n == 0 {
                    return Err(format!(
                        "{var}: a room needs room for at least one occupant"
                    ));
                }
                c.max_users = n;
            }
            "muc#roomconfig_allowpm" => {
                c.allow_pm = PmPolicy::parse(one).ok_or_else(|| {
                    format!("{var}: '{one}' is not anyone, participants, moderators or none")
                })?
            }
            _ => {}
        }
    }
    match (protected, secret) {
        (Some(false), _) => c.password = None,
        (Some(true), Some(s)) if !s.is_empty() => c.password = Some(s),
        (Some(true), _) if c.password.is_some() => {}
        (Some(true), _) => {
            return Err(
                "muc#roomconfig_passwordprotectedroom needs a muc#roomconfig_roomsecret".into(),
            )
        }
        (None, Some(s)) => c.password = (!s.is_empty()).then_some(s),
        (None, None) => {}
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FormLimits = FormLimits {
        max_users: 200,
        max_history: 50,
    };

    fn submit(fields: &[(&str, &str)]) -> Element {
        let mut x = Element::new("x", DATA).with_attr("type", "submit");
        for (var, v) in fields {
            x.push_child(
                Element::new("field", DATA)
                    .with_attr("var", *var)
                    .with_child(Element::new("value", DATA).with_text(*v)),
            );
        }
        x
    }

    #[test]
    fn a_submitted_form_sets_every_field() {
        let c = parse(
            &submit(&[
                ("FORM_TYPE", ROOMCONFIG),
                ("muc#roomconfig_roomname", "Flat"),
                ("muc#roomconfig_roomdesc", "Who buys milk"),
                ("muc#roomconfig_persistentroom", "1"),
                ("muc#roomconfig_publicroom", "0"),
                ("muc#roomconfig_membersonly", "true"),
                ("muc#roomconfig_moderatedroom", "1"),
                ("muc#roomconfig_passwordprotectedroom", "1"),
                ("muc#roomconfig_roomsecret", "s3cret"),
                ("muc#roomconfig_whois", "anyone"),
                ("muc#roomconfig_allowinvites", "1"),
                ("muc#roomconfig_changesubject", "1"),
                ("muc#maxhistoryfetch", "30"),
                ("muc#roomconfig_maxusers", "100"),
                ("muc#roomconfig_allowpm", "moderators"),
                ("x-unknown#field", "ignored"),
            ]),
            &RoomConfig::default(),
            LIMITS,
        )
        .unwrap();
        assert_eq!(c.name, "Flat");
        assert_eq!(c.description, "Who buys milk");
        assert!(c.persistent && !c.public && c.members_only && c.moderated);
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(c.whois, Whois::Anyone);
        assert!(c.allow_invites && c.change_subject);
        assert_eq!((c.history_length, c.max_users), (30, 100));
        assert_eq!(c.allow_pm, PmPolicy::Moderators);
    }

    #[test]
    fn the_rendered_form_parses_back_to_the_same_settings() {
        let c = RoomConfig {
            name: "Meetup".into(),
            password: Some("pw".into()),
            whois: Whois::Anyone,
            max_users: 30,
            ..RoomConfig::default()
        };
        let mut shown = render(&c, LIMITS);
        shown.set_attr("type", "submit");
        assert_eq!(parse(&shown, &RoomConfig::default(), LIMITS).unwrap(), c);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (("muc#roomconfig_persistentroom", "maybe"), "persistentroom"),
            (("muc#roomconfig_maxusers", "100000"), "maxusers"),
            (("muc#roomconfig_maxusers", "0"), "maxusers"),
            (("muc#maxhistoryfetch", "-1"), "maxhistoryfetch"),
            (("muc#roomconfig_whois", "everyone"), "whois"),
            (("muc#roomconfig_allowpm", "friends"), "allowpm"),
            (("FORM_TYPE", "urn:other"), "FORM_TYPE"),
            (("muc#roomconfig_passwordprotectedroom", "1"), "roomsecret"),
        ];
        for ((var, v), named) in cases {
            let e = parse(&submit(&[(var, v)]), &RoomConfig::default(), LIMITS).unwrap_err();
            assert!(e.contains(named), "{var}={v}: {e}");
        }
        let mut x = submit(&[]);
        x.set_attr("type", "form");
        assert!(parse(&x, &RoomConfig::default(), LIMITS).is_err());
    }
}
