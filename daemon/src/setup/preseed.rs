//! `hearth-setup.toml`, the optional file on the boot partition for headless installs: reading and
//! checking it, turning it into [`Answers`], and scrubbing its secrets after use, as Debian's raspi
//! images do with `sysconf.txt`.

use super::ssh_keys::{AuthorizedKey, MAX_KEYS};
use super::{
    check_domain, check_password, check_username, AdminSecret, Answers, CertificateMode, SetupError,
};
use crate::config::RegistrationPolicy;
use crate::sasl::StoredCredential;
use serde::Deserialize;
use std::path::Path;

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
    pub ssh: Option<PreseedSsh>,
    /// A tz database name, e.g. "Europe/Berlin" (applied by the first-boot script).
    pub timezone: Option<String>,
    /// An XKB layout, e.g. "de" (written to /etc/default/keyboard by the first-boot script).
    pub keyboard: Option<String>,
}

/// `[ssh]`: public keys that may log in as root over SSH (see [`super::ssh_keys`]). Without any, sshd
/// does not run. Public keys are not secrets: they stay in the file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PreseedSsh {
    /// Spanned: an error names the line of the key that is wrong.
    #[serde(default)]
    pub authorized_keys: Vec<toml::Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PreseedWifi {
    pub ssid: String,
    pub psk: Option<String>,
    /// ISO 3166 alpha-2; sets which radio channels are legal.
    pub country: Option<String>,
    /// The network does not announce its name (wpa_supplicant must probe for it).
    #[serde(default)]
    pub hidden: bool,
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
    /// Instead of `password`: a SCRAM-SHA-256 verifier (`hearthctl hash-password`, or PostgreSQL's
    /// format), so the password is never written to the card. Scrubbed after use too.
    pub password_hash: Option<String>,
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
        p.ssh_keys_at(text, origin)?;
        Ok(p)
    }

    /// The checked `[ssh] authorized_keys`, each error naming the file and the key's line.
    fn ssh_keys_at(&self, text: &str, origin: &str) -> Result<Vec<AuthorizedKey>, SetupError> {
        let Some(ssh) = &self.ssh else {
            return Ok(Vec::new());
        };
        if ssh.authorized_keys.len() > MAX_KEYS {
            return Err(SetupError::field(
                "ssh.authorized_keys",
                format!("{origin}: at most {MAX_KEYS} keys"),
            ));
        }
        ssh.authorized_keys
            .iter()
            .map(|k| {
                AuthorizedKey::parse(k.get_ref()).map_err(|e| {
                    let line = crate::config::line_col(text, k.span().start).0;
                    // File and line first, as for TOML syntax errors: the key's line is what to fix.
                    SetupError::system(format!("{origin}:{line}: ssh.authorized_keys: {e}"))
                })
            })
            .collect()
    }

    /// The `[ssh]` keys, already checked by [`Preseed::parse`].
    pub fn ssh_keys(&self) -> Vec<AuthorizedKey> {
        self.ssh
            .iter()
            .flat_map(|s| &s.authorized_keys)
            .filter_map(|k| AuthorizedKey::parse(k.get_ref()).ok())
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), SetupError> {
        if let Some(tz) = &self.timezone {
            let ok = !tz.is_empty()
                && tz.len() <= 64
                && !tz.starts_with('/')
                && !tz.split('/').any(|p| p.is_empty() || p == "." || p == "..")
                && tz
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
            if !ok {
                return Err(SetupError::field(
                    "timezone",
                    "use a tz database name, e.g. \"Europe/Berlin\"",
                ));
            }
        }
        if let Some(k) = &self.keyboard {
            let ok = !k.is_empty()
                && k.len() <= 32
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_,-".contains(c));
            if !ok {
                return Err(SetupError::field(
                    "keyboard",
                    "use an XKB layout name, e.g. \"de\" or \"gb\"",
                ));
            }
        }
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
                if let Some(hash) = &a.password_hash {
                    if a.password.is_some() {
                        return Err(SetupError::field(
                            "admin.password_hash",
                            "give either password or password_hash, not both",
                        ));
                    }
                    StoredCredential::from_verifier(hash)
                        .map_err(|e| SetupError::field("admin.password_hash", e))?;
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
            admin_secret: admin.secret()?,
            data_dir: data_dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            acme: self.acme.clone(),
            web: None,
            turn_public_address: None,
        })
    }
}

impl PreseedAdmin {
    /// The password, or else the verifier; `None` once both have been scrubbed (the box is set up).
    fn secret(&self) -> Option<AdminSecret> {
        if let Some(p) = &self.password {
            return Some(AdminSecret::Password(p.clone()));
        }
        let hash = self.password_hash.as_deref()?;
        StoredCredential::from_verifier(hash)
            .ok()
            .map(AdminSecret::Verifier)
    }
}

/// Keys removed from the preseed file after use, as (table, key).
const SECRET_KEYS: &[(&str, &str)] = &[
    ("admin", "password"),
    ("admin", "password_hash"),
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
    use super::super::{apply, build_config};
    use super::*;
    use crate::config::Config;

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
        assert!(matches!(&a.admin_secret, AdminSecret::Password(p) if p == "one-time-password"));
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
        assert!(c.s2s.enabled, "a box with a public certificate federates");
        let lan = Preseed::parse(FULL, "t").unwrap();
        let a = lan
            .answers(
                Path::new("/var/lib/hearth"),
                Path::new("/etc/hearth/hearth.toml"),
            )
            .unwrap();
        assert!(
            !build_config(&a).unwrap().s2s.enabled,
            "self-signed: no federation"
        );
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
            admin_secret: AdminSecret::Password("another-password".into()),
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

    #[tokio::test]
    async fn a_password_hash_makes_the_admin_without_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let verifier =
            StoredCredential::derive(crate::sasl::ScramHash::Sha256, "meetup-secret", 4096)
                .unwrap()
                .to_verifier();
        let text = FULL.replace(
            "password = \"one-time-password\"",
            &format!("password_hash = \"{verifier}\""),
        );
        let p = Preseed::parse(&text, "t").unwrap();
        let a = p
            .answers(
                &dir.path().join("data"),
                &dir.path().join("etc/hearth.toml"),
            )
            .unwrap();
        assert!(matches!(a.admin_secret, AdminSecret::Verifier(_)));
        let o = apply(&a).await.unwrap();
        let db = crate::storage::Storage::open(&o.config.database_path()).unwrap();
        let cred = db
            .credential("admin", crate::sasl::ScramHash::Sha256)
            .await
            .unwrap()
            .unwrap();
        assert!(cred.verify_password("meetup-secret"));
        assert!(db.user_info("admin").await.unwrap().unwrap().is_admin);
        // The verifier is scrubbed like a password, and then there is nothing left to apply.
        let clean = scrub_text(&text).unwrap();
        assert!(!clean.contains(&verifier), "{clean}");
        let again = Preseed::parse(&clean, "t").unwrap();
        assert!(again.answers(Path::new("/d"), Path::new("/c")).is_none());
    }

    #[test]
    fn a_bad_password_hash_names_the_key() {
        let bad = FULL.replace(
            "password = \"one-time-password\"",
            "password_hash = \"md5c2a7e8d3\"",
        );
        let e = Preseed::parse(&bad, "hs.toml").unwrap_err();
        assert_eq!(e.field, Some("admin.password_hash"));
        assert!(e.message.contains("SCRAM-SHA-256$"), "{e}");
        let verifier = StoredCredential::derive(crate::sasl::ScramHash::Sha256, "x-x-x-x-x", 4096)
            .unwrap()
            .to_verifier();
        let both = FULL.replace(
            "password = \"one-time-password\"",
            &format!("password = \"one-time-password\"\npassword_hash = \"{verifier}\""),
        );
        let e = Preseed::parse(&both, "hs.toml").unwrap_err();
        assert!(e.message.contains("not both"), "{e}");
    }

    #[test]
    fn ssh_keys_are_checked_and_a_bad_one_names_its_line() {
        let key = super::super::ssh_keys::tests::ED25519;
        let text =
            format!("{FULL}[ssh]\nauthorized_keys = [\n  \"{key}\",\n  \"ssh-ed25519 AAAA\",\n]\n");
        let e = Preseed::parse(&text, "hs.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("hs.toml:16: ssh.authorized_keys: the ssh-ed25519 key's data"),
            "{e}"
        );
        let good = text.replace("  \"ssh-ed25519 AAAA\",\n", "");
        let p = Preseed::parse(&good, "hs.toml").unwrap();
        assert_eq!(p.ssh_keys().len(), 1);
        assert_eq!(p.ssh_keys()[0].comment, "me@laptop");
        // Public keys are no secret: scrubbing leaves them for the owner to read.
        assert!(scrub_text(&good).unwrap().contains(key));
    }

    /// The commented example shipped on every card (image/hearth-setup.example.toml) must stay a file
    /// the box accepts once copied to hearth-setup.toml.
    #[test]
    fn the_example_on_the_card_is_valid() {
        let text = include_str!("../../../image/hearth-setup.example.toml");
        let p = Preseed::parse(text, "hearth-setup.example.toml").unwrap();
        assert!(p.wifi.is_some() && p.answers(Path::new("/d"), Path::new("/c")).is_some());
        // [ssh] is commented out (a copied example must not let a stranger's key in); uncommented, it is valid.
        let ssh: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [ssh]"))
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("# Without") && !l.starts_with("# pages"))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let p = Preseed::parse(&format!("{text}\n{ssh}"), "example").unwrap();
        assert_eq!(p.ssh_keys().len(), 1, "{ssh}");
    }
}
