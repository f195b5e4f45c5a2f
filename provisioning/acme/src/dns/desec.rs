//! deSEC (desec.io): free DNS hosting run by a non-profit, with free `dedyn.io` names and a REST
//! API. One `PATCH .../rrsets/` call sets (or, with no records, deletes) all our TXT records at once,
//! which matters because deSEC rate-limits writes per domain.

use super::{relative_name, BoxFuture, DnsProvider, TxtRecord};
use crate::http::Http;
use http::Method;
use std::time::Duration;

const API: &str = "https://desec.io/api/v1";
/// deSEC's smallest TTL for ordinary accounts; anything lower is refused with 400.
const TTL: u32 = 3600;

pub struct Desec {
    http: Http,
    zone: String,
    token: String,
}

impl Desec {
    pub fn new(http: Http, zone: String, token: String) -> Self {
        Desec { http, zone, token }
    }

    async fn patch(&self, records: &[TxtRecord], clear: bool) -> Result<(), String> {
        let (url, body) = request(&self.zone, records, clear)?;
        let auth = format!("Token {}", self.token.trim());
        let reply = self
            .http
            .send(
                Method::PATCH,
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                Some(body.into_bytes()),
            )
            .await?;
        match reply.status.as_u16() {
            200..=299 => Ok(()),
            401 | 403 => Err(format!("deSEC refused the token for {} (check acme.dns.token; it needs write access to the domain)", self.zone)),
            404 => Err(format!("deSEC has no domain {} in this account (check acme.dns.zone)", self.zone)),
            429 => Err("deSEC says too many changes were made recently; the next attempt will wait".into()),
            s => Err(format!("deSEC answered {s}: {}", reply.text())),
        }
    }
}

/// The URL and JSON body of the bulk rrset change (pure, so it is tested without the network).
pub fn request(zone: &str, records: &[TxtRecord], clear: bool) -> Result<(String, String), String> {
    let mut sets = Vec::new();
    for r in records {
        let subname = relative_name(&r.fqdn, zone, "deSEC")?;
        let values: Vec<String> = if clear {
            vec![]
        } else {
            vec![format!("\"{}\"", r.value)]
        };
        sets.push(
            serde_json::json!({"subname": subname, "type": "TXT", "ttl": TTL, "records": values}),
        );
    }
    Ok((
        format!("{API}/domains/{zone}/rrsets/"),
        serde_json::Value::Array(sets).to_string(),
    ))
}

impl DnsProvider for Desec {
    fn name(&self) -> &'static str {
        "deSEC"
    }
    fn set_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.patch(records, false))
    }
    fn clear_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.patch(records, true))
    }
    fn default_propagation(&self) -> Duration {
        // deSEC's anycast frontends usually show a change within a minute.
        Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bulk_request_for_all_names() {
        let recs = vec![
            TxtRecord {
                fqdn: "_acme-challenge.home.dedyn.io".into(),
                value: "abc".into(),
            },
            TxtRecord {
                fqdn: "_acme-challenge.groups.home.dedyn.io".into(),
                value: "def".into(),
            },
        ];
        let (url, body) = request("home.dedyn.io", &recs, false).unwrap();
        assert_eq!(url, "https://desec.io/api/v1/domains/home.dedyn.io/rrsets/");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v[0]["subname"], "_acme-challenge");
        assert_eq!(v[1]["subname"], "_acme-challenge.groups");
        assert_eq!(v[1]["records"][0], "\"def\"");
        let (_, cleared) = request("home.dedyn.io", &recs, true).unwrap();
        let v: serde_json::Value = serde_json::from_str(&cleared).unwrap();
        assert_eq!(v[0]["records"].as_array().unwrap().len(), 0);
        assert!(request("other.dedyn.io", &recs, false).is_err());
    }
}
