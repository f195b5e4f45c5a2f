//! Form fields and the per-field error messages shown beside them.

use std::collections::BTreeMap;

/// The fields of a urlencoded form. A missing field reads as empty: every handler validates
/// values anyway, and "please fill in X" is a better answer than "malformed request".
#[derive(Debug, Default, Clone)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(body: &[u8]) -> Fields {
        Fields(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// A field with surrounding spaces removed (names, domains, never passwords).
    pub fn trimmed(&self, name: &str) -> String {
        self.get(name).trim().to_string()
    }
}

/// Field name → message. Templates look messages up by the field's name.
#[derive(Debug, Default, Clone)]
pub struct Errors(BTreeMap<&'static str, String>);

impl Errors {
    pub fn new() -> Errors {
        Errors::default()
    }
    pub fn insert(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| message.into());
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks a new password and its confirmation; errors go under `field` and `field`_again.
pub fn check_new_password(
    errors: &mut Errors,
    field: &'static str,
    again: &'static str,
    pw: &str,
    pw2: &str,
) {
    if let Err(e) = hearthd::setup::check_password(pw) {
        errors.insert(field, e.message);
    } else if pw != pw2 {
        errors.insert(
            again,
            "The two passwords differ. Type the same password twice.",
        );
    }
}

/// Checks a user name; returns the normalised name or puts a message under `field`.
pub fn check_username(errors: &mut Errors, field: &'static str, name: &str) -> Option<String> {
    if name.trim().is_empty() {
        errors.insert(field, "Enter a user name, for example alice.");
        return None;
    }
    match hearthd::setup::check_username(name) {
        Ok(n) => Some(n),
        Err(e) => {
            errors.insert(field, e.message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults_to_empty() {
        let f = Fields::parse(b"a=1&b=x+y%21&a=2");
        assert_eq!(f.get("a"), "1");
        assert_eq!(f.get("b"), "x y!");
        assert_eq!(f.get("missing"), "");
    }

    #[test]
    fn password_rules() {
        let mut e = Errors::new();
        check_new_password(&mut e, "pw", "pw2", "short", "short");
        assert!(e.get("pw").unwrap().contains("at least"));
        let mut e = Errors::new();
        check_new_password(&mut e, "pw", "pw2", "long enough", "long enougH");
        assert!(e.get("pw2").unwrap().contains("differ"));
    }
}
