//! `hearth.toml`: the one configuration file of a Hearth box.
//!
//! `hearthd` owns every section except `[acme]` (read by `hearth-acme`) and `[web]` (read by
//! `hearth-web`); those two are kept as opaque tables here so each program validates its own
//! keys. Everything else is strict: an unknown key is an error naming the key, file and line,
//! because a typo in a config that silently does nothing is the worst kind of bug on a box
//! nobody watches.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where `hearthd` and `hearthctl` look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hearth/hearth.toml";
/// The control socket shared by `hearthd`, `hearthctl` and `hearth-web`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/hearth/control.sock";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The XMPP domain: the part after the `@` in every account on this box.
    pub domain: String,
    /// State: `hearth.sqlite`, `certs/`, `uploads/`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// When started as root, switch to this user before serving (after binding ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Unix socket for `hearthctl` and `hearth-web`.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// tokio worker threads; 2 suits a Zero 2 W.
    #[serde(default = "default_workers")]
    pub workers: usize,
    pub tls: TlsConfig,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub modules: ModulesConfig,
    #[serde(default)]
    pub services: ServicesConfig,
    /// Federation with other servers (`s2s/`).
    #[serde(default)]
    pub s2s: crate::s2s::S2sConfig,
    /// Owned by `hearth-acme`; not interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<toml::Table>,
    /// Owned by `hearth-web`; not interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<toml::Table>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Client connections that must upgrade with STARTTLS (RFC 6120).
    #[serde(default = "default_c2s")]
    pub c2s: Vec<SocketAddr>,
    /// Client connections that start with TLS (XEP-0368).
    #[serde(default = "default_c2s_direct_tls")]
    pub c2s_direct_tls: Vec<SocketAddr>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            c2s: default_c2s(),
            c2s_direct_tls: default_c2s_direct_tls(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationPolicy {
    /// Accounts are made only by an admin.
    Closed,
    /// Anyone holding a valid invite token may register (XEP-0401 style).
    #[default]
    Invite,
    /// Anyone may register, rate limited per IP address.
    Open,
}

impl RegistrationPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationPolicy::Closed => "closed",
            RegistrationPolicy::Invite => "invite",
            RegistrationPolicy::Open => "open",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    #[serde(default)]
    pub policy: RegistrationPolicy,
    /// With `open`: accounts one IP address may create per hour.
    #[serde(default = "default_open_per_hour")]
    pub open_per_ip_per_hour: u32,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            policy: RegistrationPolicy::default(),
            open_per_ip_per_hour: default_open_per_hour(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Offer SASL PLAIN (only ever inside TLS). Off by default: SCRAM keeps the password off the wire.
    #[serde(default)]
    pub allow_plain: bool,
    /// PBKDF2 iterations for newly stored SCRAM credentials.
    #[serde(default = "default_scram_iterations")]
    pub scram_iterations: u32,
    /// Failed logins from one IP address before it must wait.
    #[serde(default = "default_max_failures")]
    pub max_failures_per_ip: u32,
    /// Failed logins for one account before it must wait.
    #[serde(default = "default_max_failures")]
    pub max_failures_per_account: u32,
    /// How long the wait lasts, in seconds.
    #[serde(default = "default_lockout_secs")]
    pub lockout_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_plain: false,
            scram_iterations: default_scram_iterations(),
            max_failures_per_ip: default_max_failures(),
            max_failures_per_account: default_max_failures(),
            lockout_secs: default_lockout_secs(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest stanza a client may send, in bytes.
    #[serde(default = "default_max_stanza")]
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Most attributes on one element.
    #[serde(default = "default_max_attributes")]
    pub max_attributes: usize,
    /// Longest element or attribute name, in bytes.
    #[serde(default = "default_max_name")]
    pub max_name_bytes: usize,
    /// Seconds a client has from TCP accept to a bound resource.
    #[serde(default = "default_negotiation_timeout")]
    pub negotiation_timeout_secs: u64,
    /// Seconds one stanza may take to arrive once started (defeats one-byte-a-second clients).
    #[serde(default = "default_stanza_timeout")]
    pub stanza_timeout_secs: u64,
    /// Seconds of silence after which the server pings the client, then drops it if still silent.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Stanzas queued for one session before it counts as stuck and is disconnected.
    #[serde(default = "default_session_queue")]
    pub session_queue: usize,
    /// Simultaneous client connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_stanza_bytes: default_max_stanza(),
            max_depth: default_max_depth(),
            max_attributes: default_max_attributes(),
            max_name_bytes: default_max_name(),
            negotiation_timeout_secs: default_negotiation_timeout(),
            stanza_timeout_secs: default_stanza_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            session_queue: default_session_queue(),
            max_connections: default_max_connections(),
        }
    }
}

/// `[modules.NAME]`: one section per module that has settings. The section types live in the
/// module files; listing them here keeps every key strict (unknown ones are an error with the
/// line), as for the rest of the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ModulesConfig {
    #[serde(default)]
    pub offline: crate::modules::offline::OfflineConfig,
    #[serde(default)]
    pub version: crate::modules::version::VersionConfig,
    #[serde(default)]
    pub csi: crate::modules::client_state::CsiConfig,
    #[serde(default)]
    pub mam: crate::modules::mam::ArchiveConfig,
    #[serde(default)]
    pub pep: crate::modules::pep::PepConfig,
    #[serde(default)]
    pub vcard: crate::modules::vcard::VCardConfig,
    #[serde(default)]
    pub muc: crate::modules::muc::MucConfig,
    #[serde(default)]
    pub stream_management: crate::modules::stream_management::StreamManagementConfig,
    #[serde(default)]
    pub component: crate::modules::component::ComponentConfig,
    #[serde(default)]
    pub push: crate::modules::push::PushConfig,
    #[serde(default)]
    pub upload: crate::modules::upload::UploadConfig,
    #[serde(default)]
    pub external_services: crate::modules::external_services::ExternalServicesConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    /// Group chat component, e.g. `groups.example.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muc: Option<String>,
    /// An extra certificate name for uploads, e.g. `share.example.org`. Not a disco item: the
    /// upload service is the domain itself and its files are on `https://DOMAIN/upload/`
    /// (`[modules.upload]`); this name only goes into the certificate, for an external server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/hearth")
}
fn default_control_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}
fn default_workers() -> usize {
    2
}
fn default_c2s() -> Vec<SocketAddr> {
    vec!["[::]:5222".parse().expect("valid literal")]
}
fn default_c2s_direct_tls() -> Vec<SocketAddr> {
    vec!["[::]:5223".parse().expect("valid literal")]
}
fn default_open_per_hour() -> u32 {
    3
}
fn default_scram_iterations() -> u32 {
    // Conversations and Dino handle 4096 quickly even on old phones; the Pi does one
    // derivation per password change, not per login.
    4096
}
fn default_max_failures() -> u32 {
    5
}
fn default_lockout_secs() -> u64 {
    60
}
fn default_max_stanza() -> usize {
    256 * 1024
}
fn default_max_depth() -> usize {
    // Real stanzas (OMEMO, PubSub, forwarded MAM results) stay well under 20 levels.
    48
}
fn default_max_attributes() -> usize {
    64
}
fn default_max_name() -> usize {
    256
}
fn default_negotiation_timeout() -> u64 {
    30
}
fn default_stanza_timeout() -> u64 {
    30
}
fn default_idle_timeout() -> u64 {
    300
}
fn default_session_queue() -> usize {
    256
}
fn default_max_connections() -> usize {
    4096
}

/// A config problem, phrased for the person editing the file.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a config file. Errors name the file, and the line for syntax or key errors.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `origin` names the source in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            let msg = e.message();
            if line > 0 {
                ConfigError(format!("{origin}:{line}:{col}: {msg}"))
            } else {
                ConfigError(format!("{origin}: {msg}"))
            }
        })?;
        config
            .validate()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        crate::jid::validate_domain(&self.domain)
            .map_err(|e| format!("domain {:?} is not usable: {e}", self.domain))?;
        if self.workers == 0 {
            return Err("workers must be at least 1".into());
        }
        if self.limits.max_stanza_bytes < 10_000 {
            return Err("limits.max_stanza_bytes below 10000 would break ordinary clients (RFC 6120 §13.12)".into());
        }
        if self.limits.max_depth < 8 {
            return Err("limits.max_depth below 8 would break ordinary clients".into());
        }
        if self.listen.c2s.is_empty() && self.listen.c2s_direct_tls.is_empty() {
            return Err(
                "[listen] has no c2s or c2s_direct_tls address: no client could connect".into(),
            );
        }
        if self.auth.scram_iterations < 4096 {
            return Err("auth.scram_iterations must be at least 4096 (RFC 7677)".into());
        }
        self.modules.stream_management.check()?;
        self.modules.component.check()?;
        self.modules.push.check()?;
        if let Some(muc) = &self.services.muc {
            if muc.eq_ignore_ascii_case(&self.domain) {
                return Err(format!(
                    "services.muc {muc:?} is the server's own domain; group chats need a name of their own, such as \"groups.{}\"",
                    self.domain
                ));
            }
        }
        self.modules.upload.check()?;
        self.s2s.check()?;
        self.modules.external_services.check()?;
        for (key, name) in [
            ("services.muc", &self.services.muc),
            ("services.upload", &self.services.upload),
        ] {
            if let Some(name) = name {
                crate::jid::validate_domain(name)
                    .map_err(|e| format!("{key} {name:?} is not usable: {e}"))?;
            }
        }
        Ok(())
    }

    /// Every DNS name the box's certificate must cover: the domain, then its services.
    pub fn certificate_names(&self) -> Vec<String> {
        let mut names = vec![self.domain.clone()];
        names.extend(self.services.muc.iter().cloned());
        names.extend(self.services.upload.iter().cloned());
        names
    }

    /// The SQLite database with accounts, rosters and offline messages.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("hearth.sqlite")
    }

    /// Writes the config atomically (temp file, fsync, rename), so a power cut leaves the old or the new file.
    pub fn write_atomically(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| ConfigError(format!("cannot serialise config: {e}")))?;
        crate::fsutil::write_atomically(path, text.as_bytes(), 0o640)
            .map_err(|e| ConfigError(format!("cannot write {}: {e}", path.display())))
    }
}

/// 1-based line and column of a byte offset: config errors name the line a person must fix.
/// Shared by every parser of Hearth's TOML files (`hearth-acme`'s `[acme]`, the preseed file).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "domain = \"example.test\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.domain, "example.test");
        assert_eq!(c.registration.policy, RegistrationPolicy::Invite);
        assert_eq!(c.limits.max_stanza_bytes, 262_144);
        assert!(!c.auth.allow_plain);
        assert_eq!(c.certificate_names(), vec!["example.test".to_string()]);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = format!("{MINIMAL}[registration]\npolicy = \"open\"\npolcy = \"closed\"\n");
        let e = Config::parse(&text, "hearth.toml").unwrap_err().to_string();
        assert!(e.starts_with("hearth.toml:7:"), "{e}");
        assert!(e.contains("polcy"), "{e}");
    }

    #[test]
    fn bad_policy_is_explained() {
        let text = format!("{MINIMAL}[registration]\npolicy = \"sometimes\"\n");
        let e = Config::parse(&text, "hearth.toml").unwrap_err().to_string();
        assert!(e.contains("hearth.toml:6:"), "{e}");
        assert!(
            e.contains("closed") && e.contains("invite") && e.contains("open"),
            "{e}"
        );
    }

    #[test]
    fn bad_domain_is_refused() {
        let e = Config::parse(
            "domain = \"not a domain\"\n[tls]\ncert=\"a\"\nkey=\"b\"\n",
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("domain"), "{e}");
    }

    #[test]
    fn group_chats_need_a_domain_of_their_own() {
        let text = format!("{MINIMAL}[services]\nmuc = \"Example.test\"\n");
        let e = Config::parse(&text, "t").unwrap_err().to_string();
        assert!(
            e.contains("services.muc") && e.contains("groups.example.test"),
            "{e}"
        );
    }

    #[test]
    fn acme_and_web_sections_are_left_to_their_programs() {
        let text =
            format!("{MINIMAL}[acme]\nemail = \"a@b.c\"\nwhatever = 1\n[web]\nanything = true\n");
        let c = Config::parse(&text, "t").unwrap();
        assert!(c.acme.unwrap().contains_key("whatever"));
    }

    #[test]
    fn round_trips_through_toml() {
        let text = format!("{MINIMAL}[services]\nmuc = \"groups.example.test\"\n");
        let c = Config::parse(&text, "t").unwrap();
        let again = Config::parse(&toml::to_string_pretty(&c).unwrap(), "t2").unwrap();
        assert_eq!(c, again);
        assert_eq!(
            again.certificate_names(),
            vec!["example.test", "groups.example.test"]
        );
    }
}

#[cfg(test)]
mod example_tests {
    /// The documented example must stay a valid config that says exactly the defaults.
    #[test]
    fn example_file_parses_and_matches_defaults() {
        let text = include_str!("../hearth.example.toml");
        let c = super::Config::parse(text, "hearth.example.toml").unwrap();
        let minimal = super::Config::parse(
            "domain = \"example.org\"\n[tls]\ncert = \"/var/lib/hearth/certs/fullchain.pem\"\nkey = \"/var/lib/hearth/certs/privkey.pem\"\n",
            "minimal",
        )
        .unwrap();
        assert_eq!(
            c, minimal,
            "hearth.example.toml documents a value that is not the default"
        );
    }
}
