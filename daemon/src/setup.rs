//! Turning a few answers into a configured box: the one path shared by the web wizard's last step,
//! `hearth-web preseed` and `hearthctl preseed`.
//!
//! The order of [`apply`] is what keeps the box from ever being half configured: everything that
//! can be redone safely (directories, certificate, admin account) happens first, and the config file,
//! whose existence means "this box is set up", is written last and atomically. A power cut at any
//! point leaves either an unprovisioned box that runs the same steps again, or a finished one.
//!
//! The preseed file (`hearth-setup.toml` on the boot partition) is read here too, and its secrets
//! are scrubbed after use, as Debian's raspi images do with `sysconf.txt`.

use crate::config::{Config, RegistrationPolicy};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Shortest admin password we accept: the account can manage every other account.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password we accept; PBKDF2 cost does not depend on it, but nobody types more.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// How the box gets its TLS certificate. The names are the ones `hearth-setup.toml` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CertificateMode {
    /// Made on the box, valid ten years; for LAN-only names like `hearth.local`.
    #[default]
    #[serde(rename = "self-signed")]
    SelfSigned,
    /// Let's Encrypt, proving control through port 80 (`/.well-known/acme-challenge/`).
    #[serde(rename = "acme-http-01")]
    AcmeHttp01,
    /// Let's Encrypt, proving control through a DNS TXT record set via the DNS provider's API.
    #[serde(rename = "acme-dns-01")]
    AcmeDns01,
}

impl CertificateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateMode::SelfSigned => "self-signed",
            CertificateMode::AcmeHttp01 => "acme-http-01",
            CertificateMode::AcmeDns01 => "acme-dns-01",
        }
    }

    pub fn is_acme(self) -> bool {
        self != CertificateMode::SelfSigned
    }
}

/// Everything [`apply`] needs. `acme` and `web` go into the config's tables of the same names.
#[derive(Debug, Clone)]
pub struct Answers {
    pub domain: String,
    pub registration: RegistrationPolicy,
    pub certificate: CertificateMode,
    pub admin_username: String,
    pub admin_password: String,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub acme: Option<toml::Table>,
    pub web: Option<toml::Table>,
}

/// A setup problem. `field` names the answer at fault (`domain`, `admin.username`, …) so a form can
/// show the message beside it; `None` means the box itself failed (disk, permissions).
#[derive(Debug, Clone, PartialEq)]
pub struct SetupError {
    pub field: Option<&'static str>,
    pub message: String,
}

impl SetupError {
    fn field(field: &'static str, message: impl Into<String>) -> SetupError {
        SetupError {
            field: Some(field),
            message: message.into(),
        }
    }
    fn system(message: impl Into<String>) -> SetupError {
        SetupError {
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SetupError {}

/// Checks a domain answer; returns it lowercased without a trailing dot.
pub fn check_domain(domain: &str) -> Result<String, SetupError> {
    let d = domain.trim().trim_end_matches('.').to_lowercase();
    if d.is_empty() {
        return Err(SetupError::field(
            "domain",
            "Enter a name, for example chat.example.org.",
        ));
    }
    if d.contains("://") || d.contains('/') {
        return Err(SetupError::field(
            "domain",
            "Enter only the name, without http:// or a path, for example chat.example.org.",
        ));
    }
    if d.contains('@') {
        return Err(SetupError::field(
            "domain",
            "Enter only the part after the @, for example chat.example.org.",
        ));
    }
    crate::jid::validate_domain(&d)
        .map_err(|e| SetupError::field("domain", format!("This name cannot be used: {e}.")))?;
    Ok(d)
}

/// Checks an admin (or any) user name; returns its normalised form.
pub fn check_username(name: &str) -> Result<String, SetupError> {
    let n = name.trim();
    crate::jid::normalize_local(n).map_err(|e| {
        SetupError::field(
            "admin.username",
            format!("This user name cannot be used: {e}."),
        )
    })
}

/// Checks a new password against the house rules.
pub fn check_password(password: &str) -> Result<(), SetupError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(SetupError::field(
            "admin.password",
            format!("Use at least {MIN_PASSWORD_CHARS} characters."),
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(SetupError::field(
            "admin.password",
            format!("Use at most {MAX_PASSWORD_CHARS} characters."),
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(SetupError::field(
            "admin.password",
            "The password contains a control character (such as a tab or line break).",
        ));
    }
    Ok(())
}

/// Where the certificate and key live inside the data directory; `hearth-acme` writes the same files.
pub fn cert_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("certs");
    (dir.join("fullchain.pem"), dir.join("privkey.pem"))
}

/// The config the answers describe (not yet written).
pub fn build_config(a: &Answers) -> Result<Config, SetupError> {
    let domain = check_domain(&a.domain)?;
    let (cert, key) = cert_paths(&a.data_dir);
    let mut table = toml::Table::new();
    table.insert("domain".into(), domain.into());
    table.insert("data_dir".into(), a.data_dir.display().to_string().into());
    let mut tls = toml::Table::new();
    tls.insert("cert".into(), cert.display().to_string().into());
    tls.insert("key".into(), key.display().to_string().into());
    table.insert("tls".into(), tls.into());
    let mut config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e| SetupError::system(format!("internal error building the config: {e}")))?;
    config.registration.policy = a.registration;
    // hearth-acme reads `[acme] challenge` (and, for DNS-01, `[acme.dns]`) from the same file.
    let mut acme = a.acme.clone().unwrap_or_default();
    let challenge = match a.certificate {
        CertificateMode::AcmeHttp01 => "http-01",
        CertificateMode::AcmeDns01 => "dns-01",
        CertificateMode::SelfSigned => "self-signed",
    };
    acme.insert("challenge".into(), challenge.into());
    config.acme = Some(acme);
    config.web = a.web.clone();
    // Round-trip through the strict parser so we never write a file hearthd would refuse.
    let text = toml::to_string_pretty(&config)
        .map_err(|e| SetupError::system(format!("cannot serialise the config: {e}")))?;
    Config::parse(&text, "generated config").map_err(|e| SetupError::system(e.to_string()))
}

/// What [`apply`] did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub config: Config,
    /// `admin@domain`.
    pub admin_jid: String,
    /// False when a certificate already existed (for example one `hearth-acme` had already obtained).
    pub made_certificate: bool,
}

/// Turns answers into a configured box; see the module comment for why the steps come in this order.
/// Running it again with the same answers is safe: the admin's password is reset, an existing
/// certificate kept.
pub async fn apply(a: &Answers) -> Result<Outcome, SetupError> {
    let username = check_username(&a.admin_username)?;
    check_password(&a.admin_password)?;
    let config = build_config(a)?;

    for dir in [
        config.data_dir.clone(),
        config.data_dir.join("certs"),
        config.data_dir.join("acme-webroot"),
    ] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| SetupError::system(format!("cannot create {}: {e}", dir.display())))?;
    }

    // ACME modes get a self-signed placeholder too: hearthd needs some certificate to start, and
    // hearth-acme replaces the files atomically once Let's Encrypt has answered.
    let made_certificate = !(config.tls.cert.exists() && config.tls.key.exists());
    if made_certificate {
        let pair = crate::certs::self_signed(&config.certificate_names())
            .map_err(|e| SetupError::system(format!("cannot make a certificate: {e}")))?;
        crate::fsutil::write_atomically(&config.tls.key, pair.key_pem.as_bytes(), 0o640).map_err(
            |e| SetupError::system(format!("cannot write {}: {e}", config.tls.key.display())),
        )?;
        crate::fsutil::write_atomically(&config.tls.cert, pair.cert_pem.as_bytes(), 0o644)
            .map_err(|e| {
                SetupError::system(format!("cannot write {}: {e}", config.tls.cert.display()))
            })?;
    }

    create_admin(&config, &username, &a.admin_password).await?;

    if let Some(dir) = a.config_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| SetupError::system(format!("cannot create {}: {e}", dir.display())))?;
    }
    config
        .write_atomically(&a.config_path)
        .map_err(|e| SetupError::system(e.to_string()))?;
    let admin_jid = format!("{username}@{}", config.domain);
    Ok(Outcome {
        config,
        admin_jid,
        made_certificate,
    })
}

/// Creates the admin account, or resets its password when it exists (a rerun after a power cut).
async fn create_admin(config: &Config, username: &str, password: &str) -> Result<(), SetupError> {
    let db_path = config.database_path();
    let fail = |e: crate::storage::StorageError| {
        SetupError::system(format!(
            "cannot create the admin account in {}: {e}",
            db_path.display()
        ))
    };
    let db = crate::storage::Storage::open(&db_path).map_err(fail)?;
    let iterations = config.auth.scram_iterations;
    match db.user_info(username).await.map_err(fail)? {
        Some(_) => db
            .set_password(username, password, iterations)
            .await
            .map_err(fail),
        None => db
            .create_user(username, password, iterations, true)
            .await
            .map_err(fail),
    }
}

/// `hearth-setup.toml`, the optional file on the boot partition for headless installs.
/// Key names are fixed: the image's first-boot script and its documentation use them.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Preseed {
    /// The box answers as `<hostname>.local`.
    pub hostname: Option<String>,
    pub wifi: Option<PreseedWifi>,
    pub server: Option<PreseedServer>,
    pub admin: Option<PreseedAdmin>,
    /// Passed to `hearth-acme` unchanged (e.g. DNS-01 provider settings); it validates its own keys.
    pub acme: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PreseedWifi {
    pub ssid: String,
    pub psk: Option<String>,
    /// ISO 3166 alpha-2; sets which radio channels are legal.
    pub country: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PreseedServer {
    pub domain: String,
    #[serde(default)]
    pub registration: RegistrationPolicy,
    #[serde(default)]
    pub certificate: CertificateMode,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PreseedAdmin {
    pub username: String,
    /// Absent after first boot: it is scrubbed from the file once used.
    pub password: Option<String>,
}

impl Preseed {
    /// Reads and checks a preseed file. Errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Preseed, SetupError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SetupError::system(format!("cannot read {}: {e}", path.display())))?;
        Preseed::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Preseed, SetupError> {
        let p: Preseed = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| crate::config::line_col(text, s.start).0);
            match line {
                Some(line) => SetupError::system(format!("{origin}:{line}: {}", e.message())),
                None => SetupError::system(format!("{origin}: {}", e.message())),
            }
        })?;
        p.validate().map_err(|e| SetupError {
            field: e.field,
            message: format!("{origin}: {}", e.message),
        })?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), SetupError> {
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !h.starts_with('-')
                && !h.ends_with('-');
            if !ok {
                return Err(SetupError::field(
                    "hostname",
                    "use 1 to 63 letters, digits and inner hyphens, e.g. \"hearth\"",
                ));
            }
        }
        if let Some(w) = &self.wifi {
            if w.ssid.is_empty() || w.ssid.len() > 32 {
                return Err(SetupError::field(
                    "wifi.ssid",
                    "a Wi-Fi name has 1 to 32 bytes",
                ));
            }
            if let Some(psk) = &w.psk {
                let hex = psk.len() == 64 && psk.chars().all(|c| c.is_ascii_hexdigit());
                if !hex && !(8..=63).contains(&psk.len()) {
                    return Err(SetupError::field(
                        "wifi.psk",
                        "a WPA passphrase has 8 to 63 characters",
                    ));
                }
            }
            if let Some(c) = &w.country {
                if c.len() != 2 || !c.chars().all(|c| c.is_ascii_uppercase()) {
                    return Err(SetupError::field(
                        "wifi.country",
                        "use the two capital letters of your country, e.g. \"DE\"",
                    ));
                }
            }
        }
        match (&self.server, &self.admin) {
            (Some(s), Some(a)) => {
                check_domain(&s.domain)?;
                check_username(&a.username)?;
                if let Some(pw) = &a.password {
                    check_password(pw)?;
                }
            }
            (Some(_), None) => {
                return Err(SetupError::field(
                    "admin",
                    "[server] needs an [admin] section with username and password",
                ))
            }
            (None, Some(_)) => {
                return Err(SetupError::field(
                    "server",
                    "[admin] needs a [server] section with the domain",
                ))
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// The answers for [`apply`], if the file configures the server and still holds the password.
    pub fn answers(&self, data_dir: &Path, config_path: &Path) -> Option<Answers> {
        let (server, admin) = (self.server.as_ref()?, self.admin.as_ref()?);
        Some(Answers {
            domain: server.domain.clone(),
            registration: server.registration,
            certificate: server.certificate,
            admin_username: admin.username.clone(),
            admin_password: admin.password.clone()?,
            data_dir: data_dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            acme: self.acme.clone(),
            web: None,
        })
    }
}

/// Keys removed from the preseed file after use, as (table, key).
const SECRET_KEYS: &[(&str, &str)] = &[
    ("admin", "password"),
    ("wifi", "psk"),
    ("acme.dns", "token"),
    ("acme.dns", "key_secret"),
];

/// Rewrites the preseed text without its secrets, keeping comments and everything else, so the
/// owner can still read what was set up. Works line by line because the file is simple TOML
/// written by people; returns `None` when there was nothing to remove.
pub fn scrub_text(text: &str) -> Option<String> {
    let mut table = String::new();
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            table = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
        }
        let key = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        let (tbl, key) = match key.split_once('.') {
            Some((a, b)) if table.is_empty() => (a.trim().to_string(), b.trim()),
            _ => (table.clone(), key),
        };
        if t.contains('=')
            && !t.starts_with('#')
            && SECRET_KEYS.iter().any(|(st, sk)| *st == tbl && *sk == key)
        {
            out.push_str(&format!("# {key}: removed after first boot\n"));
            changed = true;
        } else {
            out.push_str(line);
        }
    }
    changed.then_some(out)
}

/// Removes the secrets from the preseed file in place (atomically; the FAT boot partition supports rename).
pub fn scrub_file(path: &Path) -> Result<bool, SetupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SetupError::system(format!("cannot read {}: {e}", path.display())))?;
    match scrub_text(&text) {
        Some(clean) => {
            crate::fsutil::write_atomically(path, clean.as_bytes(), 0o600).map_err(|e| {
                SetupError::system(format!("cannot rewrite {}: {e}", path.display()))
            })?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"hostname = "hearth"            # the box answers as hearth.local
[wifi]                         # optional
ssid = "MyWifi"
psk = "secret-passphrase"
country = "DE"
[server]
domain = "chat.example.org"
registration = "invite"        # closed | invite | open
certificate = "self-signed"    # self-signed | acme-http-01 | acme-dns-01
[admin]
username = "admin"
password = "one-time-password" # removed from the file after first boot
"#;

    #[test]
    fn reads_the_documented_format() {
        let p = Preseed::parse(FULL, "hearth-setup.toml").unwrap();
        assert_eq!(p.hostname.as_deref(), Some("hearth"));
        assert_eq!(p.wifi.as_ref().unwrap().country.as_deref(), Some("DE"));
        let a = p.answers(Path::new("/d"), Path::new("/c")).unwrap();
        assert_eq!(a.domain, "chat.example.org");
        assert_eq!(a.registration, RegistrationPolicy::Invite);
        assert_eq!(a.certificate, CertificateMode::SelfSigned);
        assert_eq!(a.admin_password, "one-time-password");
    }

    #[test]
    fn errors_name_line_and_key() {
        let e =
            Preseed::parse(&FULL.replace("certificate =", "certificat ="), "hs.toml").unwrap_err();
        assert!(
            e.message.starts_with("hs.toml:9:") && e.message.contains("certificat"),
            "{e}"
        );
        let e = Preseed::parse(&FULL.replace("\"invite\"", "\"friends\""), "hs.toml").unwrap_err();
        assert!(e.message.contains("hs.toml:8:"), "{e}");
        let e =
            Preseed::parse(&FULL.replace("chat.example.org", "http://x"), "hs.toml").unwrap_err();
        assert_eq!(e.field, Some("domain"));
        let e = Preseed::parse(&FULL.replace("one-time-password", "short"), "hs.toml").unwrap_err();
        assert_eq!(e.field, Some("admin.password"));
    }

    #[test]
    fn scrubbing_removes_only_secrets() {
        let clean = scrub_text(FULL).unwrap();
        assert!(
            !clean.contains("one-time-password") && !clean.contains("secret-passphrase"),
            "{clean}"
        );
        assert!(clean.contains("# password: removed after first boot"));
        assert!(
            clean.contains("ssid = \"MyWifi\"")
                && clean.contains("# the box answers as hearth.local")
        );
        let again = Preseed::parse(&clean, "t").unwrap();
        assert!(
            again.answers(Path::new("/d"), Path::new("/c")).is_none(),
            "nothing left to apply"
        );
        assert_eq!(scrub_text(&clean), None);
    }

    #[test]
    fn builds_a_config_hearthd_accepts() {
        let p = Preseed::parse(&FULL.replace("self-signed", "acme-http-01"), "t").unwrap();
        let a = p
            .answers(
                Path::new("/var/lib/hearth"),
                Path::new("/etc/hearth/hearth.toml"),
            )
            .unwrap();
        let c = build_config(&a).unwrap();
        assert_eq!(c.domain, "chat.example.org");
        assert_eq!(c.tls.cert, Path::new("/var/lib/hearth/certs/fullchain.pem"));
        assert_eq!(c.acme.unwrap()["challenge"].as_str(), Some("http-01"));
    }

    #[tokio::test]
    async fn apply_configures_a_box_and_can_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = Preseed::parse(FULL, "t").unwrap();
        let a = p
            .answers(
                &dir.path().join("data"),
                &dir.path().join("etc/hearth.toml"),
            )
            .unwrap();
        let o = apply(&a).await.unwrap();
        assert_eq!(o.admin_jid, "admin@chat.example.org");
        assert!(o.made_certificate && o.config.tls.key.exists());
        let written = Config::load(&a.config_path).unwrap();
        assert_eq!(written, o.config);
        // A rerun (power cut before the wizard noticed) keeps the certificate, resets the password.
        let again = Answers {
            admin_password: "another-password".into(),
            ..a.clone()
        };
        assert!(!apply(&again).await.unwrap().made_certificate);
        let db = crate::storage::Storage::open(&written.database_path()).unwrap();
        let cred = db
            .credential("admin", crate::sasl::ScramHash::Sha256)
            .await
            .unwrap()
            .unwrap();
        assert!(cred.verify_password("another-password"));
        assert!(db.user_info("admin").await.unwrap().unwrap().is_admin);
    }
}
