//! XEP-0215: External Service Discovery. Tells a client where the STUN/TURN server for calls is
//! (the box's coturn, or an external one) and hands out credentials for it.
//!
//! Credentials are TURN REST credentials (coturn's `use-auth-secret` scheme): the username is
//! `<expiry unix time>:<user tag>` and the password `base64(HMAC-SHA1(secret, username))`. The
//! TURN server shares only the secret with `hearthd` and checks both the HMAC and the expiry
//! itself, so nothing long-lived ever leaves the box: a credential copied off a phone stops
//! working when it expires.
//!
//! Off until `[modules.external_services] secret_file` is set; only then is the module
//! registered and `urn:xmpp:extdisco:2` shown in disco.

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{DiscoInfo, DiscoTarget, IqKind, IqRoute, IqTarget};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::Element;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const NS: &str = "urn:xmpp:extdisco:2";

/// A secret file larger than this is not a secret file (someone pointed at the wrong path).
const MAX_SECRET_BYTES: u64 = 4096;
/// A leaked credential must not stay useful for long; calls last hours, not weeks.
const MAX_LIFETIME_SECS: u64 = 7 * 86_400;

/// `[modules.external_services]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExternalServicesConfig {
    /// File with the TURN server's shared secret (coturn's `static-auth-secret`); setting it
    /// turns the module on. Read at every request, so a new secret needs no restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Name or address clients reach the STUN/TURN server at; by default the XMPP domain (whose
    /// certificate the box's coturn uses for TURNS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// STUN and TURN over UDP and TCP.
    #[serde(default = "default_port")]
    pub port: u16,
    /// TURN over TLS (TURNS); 0 offers none.
    #[serde(default = "default_tls_port")]
    pub tls_port: u16,
    /// How long an issued credential is valid, in seconds.
    #[serde(default = "default_lifetime")]
    pub credential_lifetime_secs: u64,
    /// The box's public address when it sits behind NAT (the router's WAN address). Not used by
    /// `hearthd`: the box's coturn setup reads it and announces relay addresses there
    /// (coturn's `external-ip`), or calls from outside could not reach the relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<IpAddr>,
}

impl Default for ExternalServicesConfig {
    fn default() -> Self {
        ExternalServicesConfig {
            secret_file: None,
            host: None,
            port: default_port(),
            tls_port: default_tls_port(),
            credential_lifetime_secs: default_lifetime(),
            public_address: None,
        }
    }
}

fn default_port() -> u16 {
    3478
}
fn default_tls_port() -> u16 {
    5349
}
fn default_lifetime() -> u64 {
    // A day: long enough for any call, and a client asks again for the next one.
    86_400
}

impl ExternalServicesConfig {
    /// Checks what `serde` cannot; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        const S: &str = "modules.external_services";
        if let Some(host) = &self.host {
            if host.parse::<IpAddr>().is_err() {
                crate::jid::validate_domain(host).map_err(|e| {
                    format!("{S}.host {host:?} is neither an address nor a name: {e}")
                })?;
            }
        }
        if self.port == 0 {
            return Err(format!("{S}.port must be a port number (1-65535)"));
        }
        if self.credential_lifetime_secs == 0 || self.credential_lifetime_secs > MAX_LIFETIME_SECS {
            return Err(format!(
                "{S}.credential_lifetime_secs must be between 1 and {MAX_LIFETIME_SECS} (7 days)"
            ));
        }
        if self.secret_file.is_none() && (self.host.is_some() || self.public_address.is_some()) {
            return Err(format!(
                "{S}: host or public_address is set but secret_file is not, so no TURN server would be offered; set secret_file (the file with the TURN server's shared secret)"
            ));
        }
        Ok(())
    }
}

/// One service as XEP-0215 lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// `stun`, `turn` or `turns`.
    pub kind: &'static str,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    pub port: u16,
}

impl Service {
    /// TURN relays for anyone who can authenticate: it needs credentials. STUN only tells a
    /// client its own address and is open.
    pub fn restricted(&self) -> bool {
        self.kind != "stun"
    }
}

/// What one STUN/TURN server on `port` (and TURNS on `tls_port`, unless 0) offers.
pub fn offered(port: u16, tls_port: u16) -> Vec<Service> {
    let mut list = Vec::with_capacity(5);
    for kind in ["stun", "turn"] {
        for transport in ["udp", "tcp"] {
            list.push(Service {
                kind,
                transport,
                port,
            });
        }
    }
    if tls_port != 0 {
        list.push(Service {
            kind: "turns",
            transport: "tcp",
            port: tls_port,
        });
    }
    list
}

/// TURN REST credentials (username, password) valid until `expires` (Unix time) for `user`.
pub fn turn_credential(secret: &[u8], expires: i64, user: &str) -> (String, String) {
    let username = format!("{expires}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// The user part of a TURN username: a tag derived from the account, not the JID itself,
/// because TURN sends the username in clear with every request. The same account always gets
/// the same tag (as long as the secret stays), so the TURN server's logs still tell accounts
/// apart.
pub fn user_tag(secret: &[u8], bare_jid: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"hearth user tag\0");
    mac.update(bare_jid.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The shared secret from its file, without surrounding white space (a trailing newline is not
/// part of coturn's `static-auth-secret`).
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "{} is {} bytes, too large for a TURN secret (at most {MAX_SECRET_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim_ascii();
    if secret.is_empty() {
        return Err(format!(
            "{} is empty: it should hold the TURN secret",
            path.display()
        ));
    }
    Ok(secret.to_vec())
}

pub struct ExternalServices {
    secret_file: PathBuf,
    host: Option<String>,
    services: Vec<Service>,
    lifetime_secs: u64,
}

impl ExternalServices {
    /// The module, when the configuration turns it on.
    pub fn new(config: &ExternalServicesConfig) -> Option<ExternalServices> {
        let secret_file = config.secret_file.clone()?;
        Some(ExternalServices {
            secret_file,
            host: config.host.clone(),
            services: offered(config.port, config.tls_port),
            lifetime_secs: config.credential_lifetime_secs,
        })
    }

    fn host<'a>(&'a self, server: &'a Server) -> &'a str {
        self.host.as_deref().unwrap_or(server.domain())
    }

    /// `<service/>` elements for `wanted`, with fresh credentials on the restricted ones.
    fn describe(
        &self,
        server: &Server,
        requester: &str,
        wanted: &[Service],
        now: i64,
    ) -> Result<Vec<Element>, StanzaError> {
        let host = self.host(server);
        let credential = if wanted.iter().any(Service::restricted) {
            let secret = read_secret(&self.secret_file).map_err(|e| {
                log::error!("external services: {e}");
                StanzaError::internal().with_text("The TURN server's secret is not readable.")
            })?;
            let expires = now + self.lifetime_secs as i64;
            let (username, password) =
                turn_credential(&secret, expires, &user_tag(&secret, requester));
            Some((username, password, crate::timefmt::xep0082(expires)))
        } else {
            None
        };
        Ok(wanted
            .iter()
            .map(|s| {
                let mut el = Element::new("service", NS)
                    .with_attr("type", s.kind)
                    .with_attr("host", host)
                    .with_attr("port", s.port.to_string())
                    .with_attr("transport", s.transport);
                if let (true, Some((username, password, expires))) = (s.restricted(), &credential) {
                    el.set_attr("restricted", "1");
                    el.set_attr("username", username.clone());
                    el.set_attr("password", password.clone());
                    el.set_attr("expires", expires.clone());
                }
                el
            })
            .collect())
    }

    /// §3.2: every service, or those of one `type`.
    fn services(&self, req: &IqRequest<'_>, now: i64) -> Result<Element, StanzaError> {
        let filter = req.payload.attr("type");
        let wanted: Vec<Service> = self
            .services
            .iter()
            .filter(|s| filter.is_none_or(|t| t == s.kind))
            .copied()
            .collect();
        let mut out = Element::new("services", NS);
        if let Some(t) = filter {
            out.set_attr("type", t);
        }
        for el in self.describe(req.server, &req.from.bare_string(), &wanted, now)? {
            out.push_child(el);
        }
        Ok(out)
    }

    /// §3.3: credentials for the service named by `type` and `host` (and `port`, if given).
    fn credentials(&self, req: &IqRequest<'_>, now: i64) -> Result<Element, StanzaError> {
        let Some(asked) = req.payload.child("service", NS) else {
            return Err(StanzaError::bad_request()
                .with_text("Name the service: <service type='…' host='…'/>."));
        };
        let (Some(kind), Some(host)) = (asked.attr("type"), asked.attr("host")) else {
            return Err(StanzaError::bad_request().with_text("A <service/> needs type and host."));
        };
        let port = match asked.attr("port").map(str::parse::<u16>) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                return Err(StanzaError::bad_request().with_text("port is not a port number."))
            }
        };
        let wanted: Vec<Service> = if host.eq_ignore_ascii_case(self.host(req.server)) {
            self.services
                .iter()
                .filter(|s| s.kind == kind && s.restricted() && port.is_none_or(|p| p == s.port))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        if wanted.is_empty() {
            return Err(StanzaError::item_not_found()
                .with_text("This server issues no credentials for that service."));
        }
        let mut out = Element::new("credentials", NS);
        for el in self.describe(req.server, &req.from.bare_string(), &wanted, now)? {
            out.push_child(el);
        }
        Ok(out)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Module for ExternalServices {
    fn name(&self) -> &'static str {
        "external_services"
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Server {
            info.feature(NS);
        }
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Get, &[IqTarget::Server], NS)];
        ROUTES
    }
    fn start(&self, _server: &std::sync::Arc<Server>) {
        // Say at startup, not at the first call, when the box's TURN secret is missing.
        if let Err(e) = read_secret(&self.secret_file) {
            log::error!("external services (XEP-0215): {e}; clients will get no TURN credentials");
        }
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            // Credentials are for this server's own accounts only, never for a remote JID.
            if req.from.domain != req.server.domain() || req.to.local.is_some() {
                return Err(StanzaError::forbidden());
            }
            let now = unix_now();
            match req.payload.name.as_str() {
                "services" => self.services(&req, now).map(Some),
                "credentials" => self.credentials(&req, now).map(Some),
                _ => Err(StanzaError::bad_request()),
            }
        })
    }
}

#[cfg(test)]
#[path = "external_services_tests.rs"]
mod tests;
