//! DNS-01: putting `_acme-challenge.<name>` TXT records where the CA looks for them, through one
//! of the providers a home user can get (deSEC, DuckDNS), any server that takes RFC 2136 updates,
//! or the Pebble test rig's `pebble-challtestsrv`.

pub mod challtestsrv;
pub mod desec;
pub mod duckdns;
pub mod rfc2136;

use crate::config::{DnsSection, ProviderKind};
use crate::http::Http;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One record to publish: `fqdn` is the full name without a trailing dot
/// (`_acme-challenge.groups.example.org`), `value` the key-authorization digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtRecord {
    pub fqdn: String,
    pub value: String,
}

pub fn challenge_name(identifier: &str) -> String {
    format!("_acme-challenge.{}", identifier.trim_end_matches('.'))
}

/// What every DNS provider does for us. Errors are sentences for the person who configured it.
pub trait DnsProvider: Send + Sync {
    /// Human name for messages ("deSEC").
    fn name(&self) -> &'static str;
    /// Publishes the records (replacing older `_acme-challenge` TXT values at those names).
    fn set_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>>;
    /// Removes them again; failures here are logged, not fatal.
    fn clear_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>>;
    /// True when the provider keeps only one TXT value for all names (DuckDNS): the names are
    /// then validated one after the other.
    fn one_at_a_time(&self) -> bool {
        false
    }
    /// How long the provider's servers take to show a change, unless configured.
    fn default_propagation(&self) -> Duration;
}

/// Builds the configured provider. `domain` is the zone when `zone` is not set.
pub fn provider(
    cfg: &DnsSection,
    domain: &str,
    http: &Http,
) -> Result<Box<dyn DnsProvider>, String> {
    let zone = cfg
        .zone
        .clone()
        .unwrap_or_else(|| domain.to_string())
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let need = |v: &Option<String>, key: &str| {
        v.clone()
            .ok_or_else(|| format!("acme.dns.{key} is not set"))
    };
    Ok(match cfg.provider {
        ProviderKind::Desec => Box::new(desec::Desec::new(
            http.clone(),
            zone,
            need(&cfg.token, "token")?,
        )),
        ProviderKind::Duckdns => Box::new(duckdns::DuckDns::new(
            http.clone(),
            &zone,
            need(&cfg.token, "token")?,
        )?),
        ProviderKind::Rfc2136 => Box::new(rfc2136::Rfc2136::new(
            need(&cfg.server, "server")?,
            zone,
            need(&cfg.key_name, "key_name")?,
            cfg.key_algorithm.as_deref().unwrap_or("hmac-sha256"),
            &need(&cfg.key_secret, "key_secret")?,
        )?),
        ProviderKind::Challtestsrv => Box::new(challtestsrv::Challtestsrv::new(
            http.clone(),
            need(&cfg.url, "url")?,
        )),
    })
}

/// The part of `fqdn` left of `zone` (`_acme-challenge.groups` for `groups.example.org` in
/// `example.org`), or an error saying the name lies outside the zone.
pub fn relative_name(fqdn: &str, zone: &str, provider: &str) -> Result<String, String> {
    let f = fqdn.trim_end_matches('.').to_ascii_lowercase();
    let z = zone.trim_end_matches('.').to_ascii_lowercase();
    if f == z {
        return Ok(String::new());
    }
    f.strip_suffix(&format!(".{z}")).map(str::to_string).ok_or_else(|| {
        format!("{fqdn} is not inside {z}, the zone {provider} manages: set acme.dns.zone, or change the names in [services]")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names() {
        assert_eq!(
            relative_name("_acme-challenge.groups.example.org", "example.org", "x").unwrap(),
            "_acme-challenge.groups"
        );
        assert_eq!(
            relative_name("Example.org.", "example.org", "x").unwrap(),
            ""
        );
        let e = relative_name("_acme-challenge.other.net", "example.org", "deSEC").unwrap_err();
        assert!(
            e.contains("other.net") && e.contains("deSEC") && e.contains("acme.dns.zone"),
            "{e}"
        );
        assert!(relative_name("_acme-challenge.badexample.org", "example.org", "x").is_err());
    }
}
