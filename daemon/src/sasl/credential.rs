//! The SCRAM key material stored per account (RFC 5802 §3) and the hash primitives it is built
//! from, shared by the SCRAM exchange and by plaintext checks (PLAIN, XEP-0077).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{SaslCondition, SaslError, ScramHash};

/// Iteration count announced for unknown users until [`set_unknown_user_iterations`] says
/// otherwise; equal to the default of `auth.scram_iterations` so they look like real accounts.
/// RFC 7677 §4's minimum: the client pays it at every login unless it caches the salted password.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// RFC 7677 §4: "the hash iteration-count ... SHOULD be at least 4096".
pub const MIN_ITERATIONS: u32 = 4096;

/// RFC 5802 §5.1 wants a random salt; 16 bytes is what common servers use and plenty against
/// precomputation.
const SALT_LEN: usize = 16;

/// What the database stores per account and hash: never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCredential {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl StoredCredential {
    /// SASLprep the password (RFC 4013), draw a random 16-byte salt, run PBKDF2.
    ///
    /// Fails with `malformed-request` for a password SASLprep rejects or that is empty,
    /// `mechanism-too-weak` below [`MIN_ITERATIONS`], `temporary-auth-failure` if the OS has no
    /// randomness to give.
    pub fn derive(
        hash: ScramHash,
        password: &str,
        iterations: u32,
    ) -> Result<StoredCredential, SaslError> {
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::getrandom(&mut salt).map_err(|_| {
            SaslError::new(
                SaslCondition::TemporaryAuthFailure,
                "no randomness available",
            )
        })?;
        StoredCredential::derive_with_salt(hash, password, salt, iterations)
    }

    /// [`derive`](Self::derive) with a caller-chosen salt, so tests can replay the RFC vectors.
    pub(crate) fn derive_with_salt(
        hash: ScramHash,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<StoredCredential, SaslError> {
        if iterations < MIN_ITERATIONS {
            return Err(SaslError::new(
                SaslCondition::MechanismTooWeak,
                "the iteration count is below the 4096 RFC 7677 asks for",
            ));
        }
        let password = prep_password(password)?;
        let (stored_key, server_key) =
            keys(hash, &salted_password(hash, &password, &salt, iterations));
        Ok(StoredCredential {
            hash,
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }

    /// Constant-time check of a plaintext password (PLAIN, XEP-0077 password changes).
    ///
    /// A password SASLprep rejects, or a corrupt record (zero iterations), never matches.
    pub fn verify_password(&self, password: &str) -> bool {
        let Ok(password) = prep_password(password) else {
            return false;
        };
        if self.iterations == 0 {
            return false;
        }
        let (stored_key, server_key) = keys(
            self.hash,
            &salted_password(self.hash, &password, &self.salt, self.iterations),
        );
        // Both keys, combined without short-circuit, so timing says nothing about which differed.
        let ok = stored_key.as_slice().ct_eq(&self.stored_key)
            & server_key.as_slice().ct_eq(&self.server_key);
        ok.into()
    }
}

/// Sets the secret from which unknown users' fake salts are derived, e.g. one kept in the
/// database, so that they survive restarts. Without it a random one is drawn per process, and a
/// prober who recorded a fake salt before a restart sees it change while real salts stay put.
/// Returns false if a secret is already in use (call it at startup, before the first login).
pub fn init_unknown_user_secret(secret: [u8; 32]) -> bool {
    UNKNOWN_USER_SECRET.set(secret).is_ok()
}

static UNKNOWN_USER_SECRET: OnceLock<[u8; 32]> = OnceLock::new();

/// Sets the iteration count announced for unknown users: call it with the configured count for
/// new credentials (at startup and on reload). If it differed from what real accounts show,
/// `i=` alone would tell a prober which names exist.
pub fn set_unknown_user_iterations(iterations: u32) {
    UNKNOWN_USER_ITERATIONS.store(iterations.max(MIN_ITERATIONS), Ordering::Relaxed);
}

static UNKNOWN_USER_ITERATIONS: AtomicU32 = AtomicU32::new(DEFAULT_ITERATIONS);

/// The secret behind fake salts: stable, so two probes for the same unknown name agree, and
/// secret, so the fake salts cannot be told apart from random ones.
pub(crate) fn unknown_user_secret() -> Result<&'static [u8; 32], SaslError> {
    if let Some(secret) = UNKNOWN_USER_SECRET.get() {
        return Ok(secret);
    }
    let mut fresh = [0u8; 32];
    getrandom::getrandom(&mut fresh).map_err(|_| {
        SaslError::new(
            SaslCondition::TemporaryAuthFailure,
            "no randomness available",
        )
    })?;
    Ok(UNKNOWN_USER_SECRET.get_or_init(|| fresh))
}

/// A credential shaped like a real one (salt length, iteration count, key sizes) that no
/// password matches, keyed by hash and user name so each unknown name has its own stable salt.
///
/// Keyed by the name as the account lookup sees it (JID localpart rules, i.e. lowercased):
/// otherwise "Mallory" and "mallory" would get different fake salts while a real user's
/// variants share one, and comparing the two would reveal who exists.
pub(crate) fn fake_credential(
    hash: ScramHash,
    secret: &[u8; 32],
    username: &str,
) -> StoredCredential {
    let name = crate::jid::normalize_local(username).unwrap_or_else(|_| username.to_owned());
    let derive = |label: &str, len: usize| {
        let input = [
            label.as_bytes(),
            b"\0",
            hash.name().as_bytes(),
            b"\0",
            name.as_bytes(),
        ]
        .concat();
        let mut out = hmac(ScramHash::Sha256, secret, &input);
        out.truncate(len);
        out
    };
    StoredCredential {
        hash,
        salt: derive("salt", SALT_LEN),
        iterations: UNKNOWN_USER_ITERATIONS.load(Ordering::Relaxed),
        stored_key: derive("stored-key", hash.output_len()),
        server_key: derive("server-key", hash.output_len()),
    }
}

/// SASLprep for passwords; RFC 4616 and RFC 5802 both require a non-empty one.
fn prep_password(password: &str) -> Result<String, SaslError> {
    match stringprep::saslprep(password) {
        Ok(p) if !p.is_empty() => Ok(p.into_owned()),
        Ok(_) => Err(SaslError::malformed("the password is empty")),
        Err(_) => Err(SaslError::malformed(
            "the password contains characters SASLprep forbids",
        )),
    }
}

/// Hi() of RFC 5802 §2.2, which is PBKDF2 with HMAC as PRF and dkLen = hash output.
fn salted_password(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; hash.output_len()];
    match hash {
        ScramHash::Sha1 => {
            pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iterations, &mut out)
        }
        ScramHash::Sha256 => {
            pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out)
        }
    }
    out
}

/// (StoredKey, ServerKey) from SaltedPassword, RFC 5802 §3.
fn keys(hash: ScramHash, salted: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let client_key = hmac(hash, salted, b"Client Key");
    (h(hash, &client_key), hmac(hash, salted, b"Server Key"))
}

/// H() of RFC 5802.
pub(crate) fn h(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// HMAC() of RFC 5802.
pub(crate) fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; should it ever, an
    // empty result matches no real key, so the exchange fails closed instead of panicking.
    match hash {
        ScramHash::Sha1 => match Hmac::<Sha1>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        },
        ScramHash::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::STANDARD as B64, Engine as _};

    #[test]
    fn rfc_5802_example_keys() {
        // Salt and the client/server keys follow from the example exchange in RFC 5802 §5.
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let cred =
            StoredCredential::derive_with_salt(ScramHash::Sha1, "pencil", salt, 4096).unwrap();
        assert_eq!(cred.stored_key.len(), 20);
        assert!(cred.verify_password("pencil"));
        assert!(!cred.verify_password("pencil "));
        assert!(!cred.verify_password("Pencil"));
    }

    #[test]
    fn derive_is_salted_and_checks_passwords() {
        let a = StoredCredential::derive(ScramHash::Sha256, "correct horse", DEFAULT_ITERATIONS)
            .unwrap();
        let b = StoredCredential::derive(ScramHash::Sha256, "correct horse", DEFAULT_ITERATIONS)
            .unwrap();
        assert_eq!(a.salt.len(), 16);
        assert_ne!(a.salt, b.salt, "salts are random");
        assert_ne!(a.stored_key, b.stored_key);
        assert_eq!((a.stored_key.len(), a.server_key.len()), (32, 32));
        assert!(a.verify_password("correct horse") && b.verify_password("correct horse"));
        assert!(!a.verify_password("correct horsf"));
        assert!(!a.verify_password(""));
    }

    #[test]
    fn passwords_are_saslprepped() {
        // RFC 4013: U+00A0 NO-BREAK SPACE maps to a space, U+00AD SOFT HYPHEN maps to nothing,
        // and "Ⅸ" (U+2168) normalises (NFKC) to "IX".
        let cred =
            StoredCredential::derive(ScramHash::Sha1, "a\u{a0}b\u{ad}c\u{2168}", MIN_ITERATIONS)
                .unwrap();
        assert!(cred.verify_password("a bcIX"));
        // A control character is prohibited: neither stored nor accepted.
        assert_eq!(
            StoredCredential::derive(ScramHash::Sha1, "a\u{7}b", MIN_ITERATIONS)
                .unwrap_err()
                .condition(),
            "malformed-request"
        );
        assert!(!cred.verify_password("a\u{7}b"));
        assert_eq!(
            StoredCredential::derive(ScramHash::Sha1, "\u{ad}", MIN_ITERATIONS)
                .unwrap_err()
                .condition(),
            "malformed-request"
        );
    }

    #[test]
    fn the_unknown_user_secret_is_fixed_once_in_use() {
        let in_use = *unknown_user_secret().unwrap();
        assert!(
            !init_unknown_user_secret([7; 32]),
            "too late: fake salts were already handed out"
        );
        assert_eq!(*unknown_user_secret().unwrap(), in_use);
        let a = fake_credential(ScramHash::Sha1, &in_use, "mallory");
        assert_eq!(
            (a.salt.len(), a.stored_key.len(), a.iterations),
            (16, 20, DEFAULT_ITERATIONS)
        );
        assert_ne!(
            a.salt,
            fake_credential(ScramHash::Sha1, &[7; 32], "mallory").salt
        );
        assert_eq!(
            a,
            fake_credential(ScramHash::Sha1, &in_use, "MALLORY"),
            "case variants look like one account"
        );
    }

    #[test]
    fn weak_or_corrupt_records_are_refused() {
        let err = StoredCredential::derive(ScramHash::Sha256, "pencil", 1000).unwrap_err();
        assert_eq!(err.condition(), "mechanism-too-weak");
        let mut cred =
            StoredCredential::derive(ScramHash::Sha256, "pencil", MIN_ITERATIONS).unwrap();
        cred.iterations = 0;
        assert!(!cred.verify_password("pencil"));
        let mut cred =
            StoredCredential::derive(ScramHash::Sha256, "pencil", MIN_ITERATIONS).unwrap();
        cred.stored_key.truncate(5);
        assert!(!cred.verify_password("pencil"));
    }
}
