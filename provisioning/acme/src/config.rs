//! The `[acme]` section of `hearth.toml`, which `hearthd` keeps opaque so that this program owns
//! and strictly checks its keys. Every key is documented in `provisioning/acme/README.md`.
//!
//! We parse the file text ourselves (not `hearthd`'s opaque table) because only the text carries
//! spans: an unknown or mistyped key is reported with its line, like every other Hearth config error.

use hearthd::config::line_col;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Let's Encrypt's production directory, the default CA.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: untrusted certificates, generous rate limits, for trying things out.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Challenge {
    /// The CA fetches a token from `http://<name>/.well-known/acme-challenge/` (port 80 must reach the box).
    #[serde(rename = "http-01")]
    Http01,
    /// The CA looks up a TXT record at `_acme-challenge.<name>`, set through a DNS provider's API.
    #[serde(rename = "dns-01")]
    Dns01,
    /// No CA: a ten-year self-signed certificate for LAN-only boxes.
    #[serde(rename = "self-signed")]
    SelfSigned,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::Dns01 => "dns-01",
            Challenge::SelfSigned => "self-signed",
        }
    }
}

/// The `[acme]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    /// Contact address given to the CA (optional: Let's Encrypt no longer mails expiry warnings).
    pub email: Option<Spanned<String>>,
    /// Directory URL, or `letsencrypt` / `letsencrypt-staging`.
    pub directory: Option<Spanned<String>>,
    pub challenge: Challenge,
    /// Where HTTP-01 tokens are written; `hearth-web` serves it. Default `<data_dir>/acme-webroot`.
    pub webroot: Option<PathBuf>,
    /// PEM file of CA certificates to trust for the ACME directory instead of the system's roots.
    pub ca_bundle: Option<PathBuf>,
    pub dns: Option<Spanned<DnsSection>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// deSEC (desec.io): free DNS hosting with a REST API, including free `dedyn.io` names.
    Desec,
    /// DuckDNS (duckdns.org): free `<name>.duckdns.org` names; one TXT value at a time.
    Duckdns,
    /// RFC 2136 dynamic updates signed with TSIG, for any DNS server that accepts them.
    Rfc2136,
    /// The management API of `pebble-challtestsrv`, the test DNS server next to the Pebble test CA.
    Challtestsrv,
}

/// The `[acme.dns]` table. Flat rather than one struct per provider so that an unknown key keeps
/// its line number (serde's tagged enums buffer their input and lose spans); `validate` checks
/// which keys each provider needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    pub provider: ProviderKind,
    /// API token (deSEC, DuckDNS).
    pub token: Option<String>,
    /// The zone the records live in: the deSEC domain, the `<name>.duckdns.org` name or the RFC 2136
    /// zone. Default: the XMPP domain.
    pub zone: Option<String>,
    /// RFC 2136: the primary server, `host:port` or an IP address (port 53).
    pub server: Option<String>,
    /// RFC 2136: TSIG key name.
    pub key_name: Option<String>,
    /// RFC 2136: `hmac-sha256` (default) or `hmac-sha512`.
    pub key_algorithm: Option<String>,
    /// RFC 2136: TSIG secret, base64 as printed by `tsig-keygen` or `keymgr`.
    pub key_secret: Option<String>,
    /// challtestsrv: its management URL, e.g. `http://127.0.0.1:8055`.
    pub url: Option<String>,
    /// Seconds to wait after setting records before asking the CA to look.
    pub propagation_secs: Option<u64>,
}

/// Only the part of `hearth.toml` this program reads strictly; other sections are `hearthd`'s.
#[derive(Deserialize)]
struct FileView {
    acme: Option<AcmeSection>,
}

/// A config problem, phrased for the person editing the file.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses the `[acme]` section of config text; `origin` names the file in messages.
pub fn parse_acme(text: &str, origin: &str) -> Result<Option<AcmeSection>, ConfigError> {
    let view: FileView = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim_end();
        match e.span() {
            Some(s) => {
                let (line, col) = line_col(text, s.start);
                ConfigError(format!("{origin}:{line}:{col}: in [acme]: {msg}"))
            }
            None => ConfigError(format!("{origin}: in [acme]: {msg}")),
        }
    })?;
    if let Some(acme) = &view.acme {
        validate(acme, text, origin)?;
    }
    Ok(view.acme)
}

fn at<T>(text: &str, origin: &str, s: &Spanned<T>, msg: String) -> ConfigError {
    let (line, col) = line_col(text, s.span().start);
    ConfigError(format!("{origin}:{line}:{col}: {msg}"))
}

fn validate(acme: &AcmeSection, text: &str, origin: &str) -> Result<(), ConfigError> {
    if let Some(email) = &acme.email {
        let e = email.get_ref();
        let ok = e
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
            && !e.chars().any(|c| c.is_whitespace() || c == ',');
        if !ok {
            return Err(at(
                text,
                origin,
                email,
                format!("acme.email {e:?} is not an email address"),
            ));
        }
    }
    if let Some(dir) = &acme.directory {
        let d = dir.get_ref();
        if resolve_directory(d).is_none() {
            return Err(at(
                text,
                origin,
                dir,
                format!("acme.directory {d:?} must be an https:// URL, \"letsencrypt\" or \"letsencrypt-staging\""),
            ));
        }
    }
    match (&acme.dns, acme.challenge) {
        (None, Challenge::Dns01) => {
            return Err(ConfigError(format!(
                "{origin}: acme.challenge is \"dns-01\" but there is no [acme.dns] section naming a provider"
            )))
        }
        (Some(dns), _) => validate_dns(dns, text, origin)?,
        (None, _) => {}
    }
    Ok(())
}

fn validate_dns(dns: &Spanned<DnsSection>, text: &str, origin: &str) -> Result<(), ConfigError> {
    let d = dns.get_ref();
    let name = match d.provider {
        ProviderKind::Desec => "desec",
        ProviderKind::Duckdns => "duckdns",
        ProviderKind::Rfc2136 => "rfc2136",
        ProviderKind::Challtestsrv => "challtestsrv",
    };
    let given = [
        ("token", d.token.is_some()),
        ("server", d.server.is_some()),
        ("key_name", d.key_name.is_some()),
        ("key_algorithm", d.key_algorithm.is_some()),
        ("key_secret", d.key_secret.is_some()),
        ("url", d.url.is_some()),
    ];
    let (required, allowed): (&[&str], &[&str]) = match d.provider {
        ProviderKind::Desec | ProviderKind::Duckdns => (&["token"], &["token"]),
        ProviderKind::Rfc2136 => (
            &["server", "key_name", "key_secret"],
            &["server", "key_name", "key_secret", "key_algorithm"],
        ),
        ProviderKind::Challtestsrv => (&["url"], &["url"]),
    };
    for (key, present) in given {
        if !present && required.contains(&key) {
            return Err(at(
                text,
                origin,
                dns,
                format!("[acme.dns] provider {name:?} needs acme.dns.{key}"),
            ));
        }
        if present && !allowed.contains(&key) {
            return Err(at(
                text,
                origin,
                dns,
                format!("acme.dns.{key} does not apply to provider {name:?}"),
            ));
        }
    }
    if let Some(alg) = &d.key_algorithm {
        if crate::dns::rfc2136::Algorithm::parse(alg).is_none() {
            return Err(at(
                text,
                origin,
                dns,
                format!(
                    "acme.dns.key_algorithm {alg:?} must be \"hmac-sha256\" or \"hmac-sha512\""
                ),
            ));
        }
    }
    if let Some(secret) = &d.key_secret {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_or(true, |k| k.is_empty())
        {
            return Err(at(
                text,
                origin,
                dns,
                "acme.dns.key_secret is not base64 (copy it from tsig-keygen's output)".into(),
            ));
        }
    }
    if let Some(url) = &d.url {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(at(
                text,
                origin,
                dns,
                format!("acme.dns.url {url:?} must start with http:// or https://"),
            ));
        }
    }
    if let Some(zone) = &d.zone {
        hearthd::jid::validate_domain(zone.trim_end_matches('.')).map_err(|e| {
            at(
                text,
                origin,
                dns,
                format!("acme.dns.zone {zone:?} is not usable: {e}"),
            )
        })?;
    }
    Ok(())
}

/// The directory URL for a configured value: an https URL or one of the named CAs.
pub fn resolve_directory(value: &str) -> Option<String> {
    match value {
        "letsencrypt" => Some(LETSENCRYPT.into()),
        "letsencrypt-staging" => Some(LETSENCRYPT_STAGING.into()),
        v if v.starts_with("https://") && v.len() > "https://".len() => Some(v.into()),
        _ => None,
    }
}

/// Everything a run needs, resolved from `hearth.toml`: `hearthd`'s keys plus ours, with defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub names: Vec<String>,
    pub domain: String,
    pub challenge: Challenge,
    pub directory: String,
    pub email: Option<String>,
    pub webroot: PathBuf,
    pub ca_bundle: Option<PathBuf>,
    pub dns: Option<DnsSection>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// `<data_dir>/certs`: account credentials and the state file.
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    /// True when the file has no `[acme]` section (self-signed is then the only sensible thing).
    pub section_missing: bool,
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let config = hearthd::config::Config::load(path).map_err(|e| ConfigError(e.to_string()))?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let acme = parse_acme(&text, &path.display().to_string())?;
        let section_missing = acme.is_none();
        let acme = acme.unwrap_or(AcmeSection {
            email: None,
            directory: None,
            challenge: Challenge::SelfSigned,
            webroot: None,
            ca_bundle: None,
            dns: None,
        });
        let directory = match &acme.directory {
            Some(d) => resolve_directory(d.get_ref()).expect("validated"),
            None => LETSENCRYPT.to_string(),
        };
        Ok(Settings {
            names: names_to_certify(&config),
            domain: config.domain.clone(),
            challenge: acme.challenge,
            directory,
            email: acme.email.map(Spanned::into_inner),
            webroot: acme
                .webroot
                .unwrap_or_else(|| config.data_dir.join("acme-webroot")),
            ca_bundle: acme.ca_bundle,
            dns: acme.dns.map(Spanned::into_inner),
            cert_path: config.tls.cert.clone(),
            key_path: config.tls.key.clone(),
            state_dir: config.data_dir.join("certs"),
            control_socket: config.control_socket.clone(),
            section_missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "domain = \"example.test\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n";

    #[test]
    fn the_group_chat_name_is_certified_only_once_dns_knows_it() {
        let parse =
            |extra: &str| hearthd::config::Config::parse(&format!("{HEAD}{extra}"), "t").unwrap();
        // `groups.example.test` is in no DNS: left out, so the order does not fail for it.
        assert_eq!(names_to_certify(&parse("")), vec!["example.test"]);
        // Named in the config: always in, once.
        assert_eq!(
            names_to_certify(&parse("[services]\nmuc = \"groups.example.test\"\n")),
            vec!["example.test", "groups.example.test"]
        );
        assert!(resolves("localhost"));
        assert!(!resolves("groups.example.invalid"));
    }

    fn err(acme: &str) -> String {
        parse_acme(&format!("{HEAD}{acme}"), "hearth.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn full_http01_section_parses() {
        let a = parse_acme(
            &format!("{HEAD}[acme]\nemail = \"me@example.test\"\ndirectory = \"letsencrypt-staging\"\nchallenge = \"http-01\"\nwebroot = \"/w\"\n"),
            "t",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.challenge, Challenge::Http01);
        assert_eq!(
            resolve_directory(a.directory.unwrap().get_ref()).unwrap(),
            LETSENCRYPT_STAGING
        );
    }

    #[test]
    fn no_section_is_fine() {
        assert!(parse_acme(HEAD, "t").unwrap().is_none());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[acme]\nchallenge = \"http-01\"\nemial = \"a@b.c\"\n");
        assert!(e.starts_with("hearth.toml:7:"), "{e}");
        assert!(e.contains("emial"), "{e}");
    }

    #[test]
    fn unknown_dns_key_keeps_its_line() {
        let e = err("[acme]\nchallenge = \"dns-01\"\n[acme.dns]\nprovider = \"desec\"\ntoken = \"x\"\ntokn = \"y\"\n");
        assert!(e.starts_with("hearth.toml:10:"), "{e}");
        assert!(e.contains("tokn"), "{e}");
    }

    #[test]
    fn bad_challenge_lists_the_choices() {
        let e = err("[acme]\nchallenge = \"http\"\n");
        assert!(e.starts_with("hearth.toml:6:"), "{e}");
        assert!(
            e.contains("http-01") && e.contains("dns-01") && e.contains("self-signed"),
            "{e}"
        );
    }

    #[test]
    fn plain_http_directory_is_refused_with_line() {
        let e = err("[acme]\nchallenge = \"http-01\"\ndirectory = \"http://ca.test/dir\"\n");
        assert!(e.starts_with("hearth.toml:7:"), "{e}");
        assert!(e.contains("https://"), "{e}");
    }

    #[test]
    fn dns01_needs_a_provider() {
        let e = err("[acme]\nchallenge = \"dns-01\"\n");
        assert!(e.contains("[acme.dns]"), "{e}");
    }

    #[test]
    fn provider_keys_are_checked() {
        let e = err("[acme]\nchallenge = \"dns-01\"\n[acme.dns]\nprovider = \"rfc2136\"\nserver = \"192.0.2.1\"\n");
        assert!(e.contains("needs acme.dns.key_name"), "{e}");
        let e = err("[acme]\nchallenge = \"dns-01\"\n[acme.dns]\nprovider = \"duckdns\"\ntoken = \"t\"\nserver = \"x\"\n");
        assert!(
            e.contains("acme.dns.server does not apply to provider \"duckdns\""),
            "{e}"
        );
        let e = err("[acme]\nchallenge = \"dns-01\"\n[acme.dns]\nprovider = \"rfc2136\"\nserver = \"s\"\nkey_name = \"k\"\nkey_secret = \"!!\"\n");
        assert!(e.contains("key_secret"), "{e}");
        let e = err("[acme]\nchallenge = \"dns-01\"\n[acme.dns]\nprovider = \"cloudflare\"\n");
        assert!(e.contains("desec") && e.contains("rfc2136"), "{e}");
    }

    #[test]
    fn bad_email_is_refused() {
        let e = err("[acme]\nchallenge = \"http-01\"\nemail = \"me at home\"\n");
        assert!(
            e.starts_with("hearth.toml:7:") && e.contains("acme.email"),
            "{e}"
        );
    }
}

/// The names the certificate covers: the domain and the services the config names, and the group
/// chat service's own name (`groups.<domain>` unless `[services] muc` says otherwise) once DNS
/// knows it, so servers elsewhere can reach the rooms (issue 14). A name that does not resolve
/// yet is left out: it would fail the whole order, and with it the domain's certificate.
fn names_to_certify(config: &hearthd::config::Config) -> Vec<String> {
    let mut names = config.certificate_names();
    if config.modules.muc.enabled {
        let muc = hearthd::modules::muc::service_domain(config);
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&muc)) && resolves(&muc) {
            names.push(muc);
        }
    }
    names
}

fn resolves(name: &str) -> bool {
    use std::net::ToSocketAddrs;
    (name, 443)
        .to_socket_addrs()
        .is_ok_and(|mut addrs| addrs.next().is_some())
}
