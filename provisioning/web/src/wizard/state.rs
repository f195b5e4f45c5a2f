//! The wizard's answers so far, kept on disk so a reboot (or a closed browser tab) resumes where
//! the owner left off. Written atomically after every step; mode 0600 because it holds the admin
//! password until setup completes, when the password is removed from it.

use hearthd::config::RegistrationPolicy;
use hearthd::setup::CertificateMode;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FILE: &str = "wizard.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NameKind {
    /// A domain the owner has, e.g. chat.example.org.
    Own,
    /// A dynamic-DNS name, e.g. myhome.duckdns.org.
    Dyndns,
    /// Only inside the home network: `hearth.local`, self-signed.
    Lan,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NameAnswer {
    pub kind: NameKind,
    pub domain: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdminAnswer {
    pub username: String,
    /// Cleared when setup completes.
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CertAnswer {
    pub mode: CertificateMode,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub dns_provider: String,
    #[serde(default)]
    pub dns_token: String,
}

/// What the done page shows; kept so reloading it shows the same invite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finished {
    pub domain: String,
    pub admin_jid: String,
    pub invite_uri: String,
    pub invite_url: String,
    pub certificate: CertificateMode,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WizardState {
    pub name: Option<NameAnswer>,
    pub admin: Option<AdminAnswer>,
    pub join: Option<RegistrationPolicy>,
    pub cert: Option<CertAnswer>,
    pub finished: Option<Finished>,
    /// The router's public address, learnt when the reachability check came in through NAT.
    #[serde(default)]
    pub public_address: Option<std::net::IpAddr>,
}

/// The pages of the wizard, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Code = 1,
    Name = 2,
    Admin = 3,
    Join = 4,
    Cert = 5,
    Done = 6,
}

impl Step {
    pub fn path(self) -> &'static str {
        match self {
            Step::Code => "/setup",
            Step::Name => "/setup/name",
            Step::Admin => "/setup/admin",
            Step::Join => "/setup/join",
            Step::Cert => "/setup/certificate",
            Step::Done => "/setup/done",
        }
    }
}

impl WizardState {
    /// The first step still unanswered (after the setup code).
    pub fn next_step(&self) -> Step {
        if self.finished.is_some() {
            Step::Done
        } else if self.name.is_none() {
            Step::Name
        } else if self.admin.is_none() {
            Step::Admin
        } else if self.join.is_none() {
            Step::Join
        } else {
            Step::Cert
        }
    }

    pub fn is_lan(&self) -> bool {
        matches!(&self.name, Some(n) if n.kind == NameKind::Lan)
    }
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            path: state_dir.join(FILE),
        }
    }

    /// The saved answers; a missing or unreadable file starts over (and says so in the log).
    pub fn load(&self) -> WizardState {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!(
                    "{} is unreadable ({e}); the wizard starts over",
                    self.path.display()
                );
                WizardState::default()
            }),
            Err(_) => WizardState::default(),
        }
    }

    pub fn save(&self, state: &WizardState) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        hearthd::fsutil::write_atomically(&self.path, &json, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut s = store.load();
        assert_eq!(s.next_step(), Step::Name);
        s.name = Some(NameAnswer {
            kind: NameKind::Lan,
            domain: "hearth.local".into(),
        });
        s.admin = Some(AdminAnswer {
            username: "admin".into(),
            password: "secret-secret".into(),
        });
        store.save(&s).unwrap();
        let again = Store::new(dir.path()).load();
        assert_eq!(again, s);
        assert_eq!(again.next_step(), Step::Join);
        assert!(again.is_lan());
    }
}
