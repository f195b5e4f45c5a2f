//! RFC 4616, the PLAIN mechanism: `[authzid] NUL authcid NUL passwd` in one message.
//!
//! Only ever offered over TLS, and only when the operator allows it (`mechanisms`): the server
//! sees the cleartext password. It exists for old clients and for tools like `sendxmpp`.

use super::credential::{fake_credential, unknown_user_secret};
use super::{prep_username, SaslError, ScramHash, StoredCredential};

/// RFC 4616 §2 asks servers to accept at least 255 octets per field; this leaves room for a
/// 1023-byte localpart and a long passphrase while bounding what one `<auth/>` can make us hold.
const MAX_MESSAGE_LEN: usize = 4096;

#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// As sent (no SASLprep: it is a JID, the caller checks it equals the user's bare JID).
    pub authzid: Option<String>,
    /// The authcid, SASLprepped; the caller applies JID localpart rules.
    pub username: String,
    /// As sent: [`StoredCredential::verify_password`] SASLpreps it.
    pub password: String,
}

/// Leaves the password out, so credentials cannot end up in a log by `{:?}`.
impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Parses the (already base64-decoded) PLAIN message. Every grammar violation, including
/// invalid UTF-8, a missing or extra NUL, or an empty user name or password, is
/// `malformed-request`.
pub fn parse_plain(msg: &[u8]) -> Result<PlainCredentials, SaslError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(SaslError::malformed("the message is too long"));
    }
    let text =
        std::str::from_utf8(msg).map_err(|_| SaslError::malformed("the message is not UTF-8"))?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslError::malformed(
            "PLAIN needs exactly authzid NUL authcid NUL password",
        ));
    };
    if password.is_empty() {
        return Err(SaslError::malformed("the password is empty"));
    }
    Ok(PlainCredentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        username: prep_username(authcid)?,
        password: password.to_owned(),
    })
}

/// Checks a PLAIN password; for an unknown user (`None`) it still runs one full derivation,
/// against the same fake credential SCRAM would show, so the response time does not reveal
/// which names exist.
pub fn check_plain_password(
    cred: Option<&StoredCredential>,
    username: &str,
    password: &str,
) -> bool {
    match cred {
        Some(cred) => cred.verify_password(password),
        None => {
            if let Ok(secret) = unknown_user_secret() {
                // No password matches a fake credential; the work is the point.
                let _ =
                    fake_credential(ScramHash::Sha256, secret, username).verify_password(password);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::DEFAULT_ITERATIONS;

    #[test]
    fn bob_logs_in_with_plain() {
        let creds = parse_plain(b"\0bob\0hunter2 and more").unwrap();
        assert_eq!(creds.authzid, None);
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("bob", "hunter2 and more")
        );
        let cred =
            StoredCredential::derive(ScramHash::Sha256, "hunter2 and more", DEFAULT_ITERATIONS)
                .unwrap();
        assert!(check_plain_password(Some(&cred), "bob", &creds.password));
        assert!(!check_plain_password(Some(&cred), "bob", "hunter2"));
        assert!(!check_plain_password(None, "bob", &creds.password));
        assert!(
            !format!("{creds:?}").contains("hunter2"),
            "Debug hides the password"
        );
    }

    #[test]
    fn authzid_and_saslprep() {
        let creds = parse_plain("bob@example.org\0B\u{ad}ob\u{a0}\0p\u{e4}ss".as_bytes()).unwrap();
        assert_eq!(creds.authzid.as_deref(), Some("bob@example.org"));
        assert_eq!(
            creds.username, "Bob ",
            "soft hyphen dropped, no-break space mapped; case kept"
        );
        // The password stays as sent; verification SASLpreps both sides.
        assert_eq!(creds.password, "p\u{e4}ss");
        let cred =
            StoredCredential::derive(ScramHash::Sha1, "pa\u{308}ss", DEFAULT_ITERATIONS).unwrap();
        assert!(
            cred.verify_password(&creds.password),
            "NFKC: a + combining diaeresis is \u{e4}"
        );
    }

    #[test]
    fn malformed_plain_messages_are_refused() {
        let long = [b"\0bob\0".as_slice(), &[b'x'; MAX_MESSAGE_LEN]].concat();
        let bad: &[&[u8]] = &[
            b"",
            b"bob",
            b"\0bob",
            b"bob\0secret",
            b"\0bob\0",         // empty password
            b"\0\0secret",      // empty user
            b"\0bob\0sec\0ret", // extra NUL
            b"\0\0\0",
            b"\0b\xffob\0secret",  // not UTF-8 in the user
            b"\0bob\0s\xc3",       // truncated UTF-8 in the password
            b"\xfe\0bob\0secret",  // not UTF-8 in the authzid
            b"\0b\x07ob\0secret",  // control character: SASLprep forbids it
            b"\0\xc2\xad\0secret", // maps to nothing: empty user
            &long,
        ];
        for msg in bad {
            let err = parse_plain(msg).expect_err(&String::from_utf8_lossy(msg));
            assert_eq!(
                err.condition(),
                "malformed-request",
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }
}
