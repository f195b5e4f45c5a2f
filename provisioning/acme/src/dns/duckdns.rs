//! DuckDNS (duckdns.org): free `<name>.duckdns.org` names. Its update URL sets a single TXT value
//! that every name under `<name>.duckdns.org` answers with, so several names cannot be validated
//! at the same time: `one_at_a_time` makes the order do them one after the other.

use super::{relative_name, BoxFuture, DnsProvider, TxtRecord};
use crate::http::Http;
use http::Method;
use std::time::Duration;

const UPDATE: &str = "https://www.duckdns.org/update";

pub struct DuckDns {
    http: Http,
    /// The `<name>` of `<name>.duckdns.org`.
    subdomain: String,
    zone: String,
    token: String,
}

impl DuckDns {
    pub fn new(http: Http, zone: &str, token: String) -> Result<Self, String> {
        let subdomain = zone
            .strip_suffix(".duckdns.org")
            .filter(|s| !s.is_empty() && !s.contains('.'))
            .ok_or_else(|| format!("DuckDNS manages <name>.duckdns.org, not {zone}: set acme.dns.zone to your DuckDNS name"))?;
        Ok(DuckDns {
            http,
            subdomain: subdomain.to_string(),
            zone: zone.to_string(),
            token,
        })
    }

    async fn update(&self, records: &[TxtRecord], clear: bool) -> Result<(), String> {
        for r in records {
            relative_name(&r.fqdn, &self.zone, "DuckDNS")?;
        }
        // One value for the whole name: the last record wins, which is why names go one at a time.
        let value = records.last().map(|r| r.value.as_str()).unwrap_or("");
        let url = update_url(&self.subdomain, self.token.trim(), value, clear);
        let reply = self
            .http
            .send(Method::GET, &url, &[], None)
            .await
            .map_err(|e| e.replace(self.token.trim(), "<token>"))?;
        let text = reply.text();
        if reply.status.is_success() && text.starts_with("OK") {
            Ok(())
        } else {
            Err(format!(
                "DuckDNS did not accept the TXT update for {}.duckdns.org (answer {:?}): check acme.dns.token and the name",
                self.subdomain,
                text.lines().next().unwrap_or("")
            ))
        }
    }
}

pub fn update_url(subdomain: &str, token: &str, value: &str, clear: bool) -> String {
    if clear {
        format!("{UPDATE}?domains={subdomain}&token={token}&txt=&clear=true")
    } else {
        format!("{UPDATE}?domains={subdomain}&token={token}&txt={value}")
    }
}

impl DnsProvider for DuckDns {
    fn name(&self) -> &'static str {
        "DuckDNS"
    }
    fn set_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.update(records, false))
    }
    fn clear_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.update(records, true))
    }
    fn one_at_a_time(&self) -> bool {
        true
    }
    fn default_propagation(&self) -> Duration {
        Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_zone_checks() {
        assert_eq!(
            update_url("home", "tok", "v4lue", false),
            "https://www.duckdns.org/update?domains=home&token=tok&txt=v4lue"
        );
        assert!(update_url("home", "tok", "", true).ends_with("&txt=&clear=true"));
        let http = crate::http::Http::new(None).unwrap();
        assert!(DuckDns::new(http.clone(), "home.duckdns.org", "t".into()).is_ok());
        let e = DuckDns::new(http, "example.org", "t".into()).err().unwrap();
        assert!(e.contains("acme.dns.zone"), "{e}");
    }
}
