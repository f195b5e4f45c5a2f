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
use crate::sasl::StoredCredential;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

pub mod imager;
pub mod imager_boot;
mod imager_cloud;
#[cfg(test)]
mod imager_tests;
mod preseed;
pub mod ssh_keys;
pub use preseed::{
    scrub_file, scrub_text, Preseed, PreseedAdmin, PreseedServer, PreseedSsh, PreseedWifi,
};

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
    pub admin_secret: AdminSecret,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub acme: Option<toml::Table>,
    pub web: Option<toml::Table>,
    /// The router's public address when the box is behind NAT (the wizard's reachability check
    /// saw it); the box's coturn announces its relays there.
    pub turn_public_address: Option<std::net::IpAddr>,
}

/// How the admin account gets its credentials.
#[derive(Debug, Clone)]
pub enum AdminSecret {
    /// A password typed into the wizard or left in the preseed file; the credentials are derived here.
    Password(String),
    /// A SCRAM verifier made elsewhere (`password_hash` in the preseed, `hearthctl hash-password`): the
    /// password itself never reaches the box.
    Verifier(StoredCredential),
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

/// The box's TURN secret, next to `hearth.toml` (made by the image's `hearth-turn-secret.service`).
pub const TURN_SECRET_FILE: &str = "turn-secret";

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
    // Other servers cannot verify a self-signed certificate (and Hearth would not accept theirs
    // on that basis either): a LAN-only box does not federate.
    config.s2s.enabled = a.certificate != CertificateMode::SelfSigned;
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
    // The image makes the TURN secret its coturn shares with hearthd next to hearth.toml
    // (hearth-turn-secret.service); where it exists, calls get that TURN server (XEP-0215).
    let turn_secret = a.config_path.parent().map(|dir| dir.join(TURN_SECRET_FILE));
    if let Some(secret) = turn_secret.filter(|p| p.exists()) {
        config.modules.external_services.secret_file = Some(secret);
        config.modules.external_services.public_address = a.turn_public_address;
    }
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
    if let AdminSecret::Password(password) = &a.admin_secret {
        check_password(password)?;
    }
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

    create_admin(&config, &username, &a.admin_secret).await?;

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

/// Creates the admin account, or resets its credentials when it exists (a rerun after a power cut).
async fn create_admin(
    config: &Config,
    username: &str,
    secret: &AdminSecret,
) -> Result<(), SetupError> {
    let db_path = config.database_path();
    let fail = |e: crate::storage::StorageError| {
        SetupError::system(format!(
            "cannot create the admin account in {}: {e}",
            db_path.display()
        ))
    };
    let db = crate::storage::Storage::open(&db_path).map_err(fail)?;
    let exists = db.user_info(username).await.map_err(fail)?.is_some();
    let result = match secret {
        AdminSecret::Password(password) => {
            let iterations = config.auth.scram_iterations;
            if exists {
                db.set_password(username, password, iterations).await
            } else {
                db.create_user(username, password, iterations, true).await
            }
        }
        AdminSecret::Verifier(cred) => {
            let creds = vec![cred.clone()];
            if exists {
                db.set_credentials(username, creds).await
            } else {
                db.create_user_with_credentials(username, creds, true).await
            }
        }
    };
    result.map_err(fail)
}
