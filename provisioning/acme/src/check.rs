//! `hearth-acme check`: tries what renewal depends on, the way the CA will, and says in one
//! sentence per finding what is fine and what to fix.

use crate::cert::{fmt_span, fmt_time};
use crate::config::{Challenge, Settings};
use crate::dns::{challenge_name, TxtRecord};
use crate::http::Http;
use crate::renew;
use crate::state::{self, State};
use http::Method;
use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;

/// A certificate closer than this to expiry is a problem even if renewal has not failed yet.
const EXPIRY_WARNING_SECS: i64 = 7 * 86_400;

pub struct Report {
    pub text: String,
    pub problems: usize,
}

impl Report {
    fn ok(&mut self, line: String) {
        let _ = writeln!(self.text, "ok    {line}");
    }
    fn fix(&mut self, line: String) {
        self.problems += 1;
        let _ = writeln!(self.text, "FIX   {line}");
    }
    fn note(&mut self, line: String) {
        let _ = writeln!(self.text, "note  {line}");
    }
}

pub async fn run(s: &Settings, http_port: u16, resolve: &[String]) -> Report {
    let mut r = Report {
        text: String::new(),
        problems: 0,
    };
    let overrides: Vec<(String, IpAddr)> = resolve
        .iter()
        .filter_map(|o| {
            let parsed = o
                .split_once('=')
                .and_then(|(n, a)| Some((n.to_ascii_lowercase(), a.parse().ok()?)));
            if parsed.is_none() {
                r.fix(format!("--resolve {o:?} is not NAME=IP; ignored."));
            }
            parsed
        })
        .collect();
    let http = match Http::new(s.ca_bundle.as_deref()) {
        Ok(h) => Some(h),
        Err(e) => {
            r.fix(e);
            None
        }
    };

    let mut addresses = Vec::new();
    for name in &s.names {
        let addrs = lookup(name, http_port, &overrides).await;
        match &addrs {
            Ok(list) if list.is_empty() => r.fix(format!("{name} has no address in DNS: add an A record pointing at your public IP address.")),
            Ok(list) => {
                let shown: Vec<String> = list.iter().map(|a| a.to_string()).collect();
                let private = list.iter().filter(|a| is_private(a)).count();
                let given = overrides.iter().any(|(n, _)| n == &name.to_ascii_lowercase());
                if private == list.len() && !given && s.challenge == Challenge::Http01 {
                    r.fix(format!(
                        "{name} points to {} only, a home-network address the CA cannot reach: point it at your public IP address.",
                        shown.join(", ")
                    ));
                } else {
                    r.ok(format!("{name} resolves to {}.", shown.join(", ")));
                }
            }
            Err(e) => r.fix(format!("{name} cannot be looked up ({e}): check that the name is registered and has an A record.")),
        }
        addresses.push((name.clone(), addrs.unwrap_or_default()));
    }

    match (s.challenge, &http) {
        (Challenge::Http01, Some(h)) => check_port80(&mut r, h, &s.webroot, http_port, &addresses).await,
        (Challenge::Dns01, Some(h)) => check_provider(&mut r, s, h).await,
        (Challenge::SelfSigned, _) => r.note("Self-signed mode: clients must accept the certificate once; nothing is fetched from a CA.".into()),
        (_, None) => {}
    }

    check_certificate(&mut r, s);
    let st = State::load(&s.state_dir);
    if let Some(e) = &st.last_error {
        let next = st
            .next_attempt
            .map(|t| format!(" Next attempt after {}.", fmt_time(t)))
            .unwrap_or_default();
        r.fix(format!(
            "The last renewal attempt ({}) failed: {e}{next}",
            st.last_attempt.map(fmt_time).unwrap_or_default()
        ));
    } else if let Some(t) = st.last_success {
        r.ok(format!("The last renewal ({}) succeeded.", fmt_time(t)));
    }
    let _ = writeln!(
        r.text,
        "{}",
        if r.problems == 0 {
            "Everything renewal needs is in place.".to_string()
        } else {
            format!("{} thing(s) to fix.", r.problems)
        }
    );
    r
}

async fn lookup(
    name: &str,
    port: u16,
    overrides: &[(String, IpAddr)],
) -> Result<Vec<IpAddr>, String> {
    let lower = name.to_ascii_lowercase();
    let given: Vec<IpAddr> = overrides
        .iter()
        .filter(|(n, _)| *n == lower)
        .map(|(_, a)| *a)
        .collect();
    if !given.is_empty() {
        return Ok(given);
    }
    match tokio::net::lookup_host((name, port)).await {
        Ok(it) => {
            let mut v: Vec<IpAddr> = it.map(|sa| sa.ip()).collect();
            v.dedup();
            Ok(v)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn is_private(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v) => {
            v.is_loopback()
                || (v.segments()[0] & 0xfe00) == 0xfc00
                || (v.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Puts a test token in the webroot and fetches it back through every name's address, as the CA would.
async fn check_port80(
    r: &mut Report,
    http: &Http,
    webroot: &Path,
    port: u16,
    addresses: &[(String, Vec<IpAddr>)],
) {
    let token = format!(
        "hearth-check-{:08x}{:08x}",
        state::random_u32(),
        state::random_u32()
    );
    let content = format!("hearth-acme check {:08x}", state::random_u32());
    let dir = webroot.join(".well-known/acme-challenge");
    let path = dir.join(&token);
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &content)) {
        r.fix(format!("Cannot write a test token into the webroot {} ({e}): hearth-acme needs write access there.", dir.display()));
        return;
    }
    for (name, addrs) in addresses {
        let Some(addr) = addrs.first() else { continue };
        let host = match addr {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        let url = format!("http://{host}:{port}/.well-known/acme-challenge/{token}");
        let shown = if port == 80 {
            format!("http://{name}/")
        } else {
            format!("http://{name}:{port}/")
        };
        match http.send(Method::GET, &url, &[("host", name)], None).await {
            Ok(reply) if reply.status.is_success() && reply.body.as_ref() == content.as_bytes() => {
                r.ok(format!("{shown} serves our test token from {}: HTTP-01 validation can work.", webroot.display()))
            }
            Ok(reply) if reply.status.as_u16() == 404 => r.fix(format!(
                "{shown} answers but not with our test token (404): whatever listens on port {port} at {addr} does not serve {}. \
                 Forward port {port} to this box, and check that hearth-web is running.",
                webroot.display()
            )),
            Ok(reply) => r.fix(format!(
                "{shown} answered {} with something other than our test token: another device or page answers on port {port} at {addr}.",
                reply.status
            )),
            Err(e) => r.fix(format!(
                "{shown} does not answer ({e}). Forward TCP port {port} on your router to this box, or use dns-01 if port 80 is blocked."
            )),
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Publishes and removes a test TXT record, which proves the provider accepts our credentials.
async fn check_provider(r: &mut Report, s: &Settings, http: &Http) {
    let Some(cfg) = &s.dns else { return };
    let provider = match crate::dns::provider(cfg, &s.domain, http) {
        Ok(p) => p,
        Err(e) => return r.fix(e),
    };
    let rec = [TxtRecord {
        fqdn: challenge_name(&s.domain),
        value: format!("hearth-check-{:08x}", state::random_u32()),
    }];
    match provider.set_txt(&rec).await {
        Ok(()) => {
            r.ok(format!(
                "{} accepted a test TXT record at {}: DNS-01 validation can work.",
                provider.name(),
                rec[0].fqdn
            ));
            if let Err(e) = provider.clear_txt(&rec).await {
                r.note(format!(
                    "The test TXT record could not be removed again ({e}); it does no harm."
                ));
            }
        }
        Err(e) => r.fix(format!(
            "{} did not accept a test TXT record: {e}",
            provider.name()
        )),
    }
}

fn check_certificate(r: &mut Report, s: &Settings) {
    let now = state::now();
    let cur = renew::current(s);
    let Some(c) = &cur.cert else {
        return r.fix(format!(
            "There is no certificate at {} yet: run `hearth-acme renew`.",
            s.cert_path.display()
        ));
    };
    let left = c.not_after - now;
    if left <= 0 {
        r.fix(format!(
            "The certificate expired {} ago ({}): clients refuse to connect until it is renewed.",
            fmt_span(left),
            fmt_time(c.not_after)
        ));
    } else if left < EXPIRY_WARNING_SECS && s.challenge != Challenge::SelfSigned {
        r.fix(format!(
            "The certificate expires in {} ({}): renewal is late; fix the problems above.",
            fmt_span(left),
            fmt_time(c.not_after)
        ));
    } else {
        r.ok(format!(
            "The certificate is valid until {} ({} left).",
            fmt_time(c.not_after),
            fmt_span(left)
        ));
    }
    if !c.covers_exactly(&s.names) {
        r.fix(format!(
            "The certificate covers {} but the box needs {}: run `hearth-acme renew`.",
            c.names.join(", "),
            s.names.join(", ")
        ));
    } else {
        r.ok(format!("The certificate covers {}.", c.names.join(", ")));
    }
    if c.self_signed && s.challenge != Challenge::SelfSigned {
        r.fix("The certificate is self-signed, so clients will warn about it: a CA certificate replaces it once renewal succeeds.".into());
    }
    if !cur.key_ok {
        r.fix(format!(
            "The key in {} does not belong to the certificate: run `hearth-acme renew --force`.",
            s.key_path.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for a in [
            "192.168.1.2",
            "10.0.0.1",
            "127.0.0.1",
            "100.64.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(&a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "2001:db8::1", "100.128.0.1"] {
            assert!(!is_private(&a.parse().unwrap()), "{a}");
        }
    }
}
