//! Jabber IDs (RFC 7622), with the normalisation a small server needs: domains and
//! localparts are case-folded, resources kept as sent.

use std::fmt;

/// The longest part RFC 7622 allows, in bytes.
const MAX_PART: usize = 1023;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    pub local: Option<String>,
    pub domain: String,
    pub resource: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JidError(pub &'static str);

impl fmt::Display for JidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for JidError {}

/// Characters RFC 7622 §3.3.1 forbids in a localpart.
const LOCAL_FORBIDDEN: &[char] = &['"', '&', '\'', '/', ':', '<', '>', '@', ' '];

/// Checks and normalises a localpart (a user name): lowercased, no forbidden characters.
pub fn normalize_local(local: &str) -> Result<String, JidError> {
    if local.is_empty() {
        return Err(JidError("the user name is empty"));
    }
    if local.len() > MAX_PART {
        return Err(JidError("the user name is too long"));
    }
    if local
        .chars()
        .any(|c| LOCAL_FORBIDDEN.contains(&c) || c.is_control() || c.is_whitespace())
    {
        return Err(JidError(
            "the user name contains a space or one of \" & ' / : < > @",
        ));
    }
    Ok(local.to_lowercase())
}

/// Checks that a domain is a plausible DNS name or IP literal.
pub fn validate_domain(domain: &str) -> Result<(), JidError> {
    if domain.is_empty() {
        return Err(JidError("the domain is empty"));
    }
    if domain.len() > 253 {
        return Err(JidError("the domain is longer than 253 characters"));
    }
    if domain.starts_with('[') && domain.ends_with(']') {
        return domain[1..domain.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| JidError("the domain is not a valid IPv6 literal"));
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(JidError(
                "each dot-separated part of the domain must have 1 to 63 characters",
            ));
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(JidError(
                "the domain may contain only letters, digits, dots and inner hyphens",
            ));
        }
    }
    Ok(())
}

impl Jid {
    /// Parses and normalises `local@domain/resource`.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (rest, resource) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let (local, domain) = match rest.find('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
        validate_domain(&domain)?;
        let local = local.map(normalize_local).transpose()?;
        let resource = match resource {
            Some("") => return Err(JidError("the resource after '/' is empty")),
            Some(r) if r.len() > MAX_PART => return Err(JidError("the resource is too long")),
            Some(r) if r.chars().any(char::is_control) => {
                return Err(JidError("the resource contains control characters"))
            }
            Some(r) => Some(r.to_string()),
            None => None,
        };
        Ok(Jid {
            local,
            domain,
            resource,
        })
    }

    pub fn bare(&self) -> Jid {
        Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: None,
        }
    }

    pub fn with_resource(&self, resource: &str) -> Jid {
        Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: Some(resource.to_string()),
        }
    }

    pub fn is_bare(&self) -> bool {
        self.resource.is_none()
    }

    /// `local@domain` (or `domain`) as a string.
    pub fn bare_string(&self) -> String {
        match &self.local {
            Some(l) => format!("{l}@{}", self.domain),
            None => self.domain.clone(),
        }
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.local {
            write!(f, "{l}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Jid::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let j = Jid::parse("Alice@Example.Test/Phone 1").unwrap();
        assert_eq!(j.local.as_deref(), Some("alice"));
        assert_eq!(j.domain, "example.test");
        assert_eq!(j.resource.as_deref(), Some("Phone 1"));
        assert_eq!(j.to_string(), "alice@example.test/Phone 1");
        assert_eq!(j.bare().to_string(), "alice@example.test");
        assert_eq!(Jid::parse("example.test").unwrap().local, None);
        assert_eq!(
            Jid::parse("a@b/c/d").unwrap().resource.as_deref(),
            Some("c/d")
        );
    }

    #[test]
    fn rejects_bad_jids() {
        for bad in [
            "",
            "@example.test",
            "a b@example.test",
            "alice@",
            "alice@exa mple",
            "alice@example.test/",
            "a@-x.test",
        ] {
            assert!(Jid::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
