//! SASL for c2s streams (RFC 6120 §6): SCRAM-SHA-1/-256 with and without channel binding
//! (RFC 5802, RFC 7677, RFC 9266) and PLAIN (RFC 4616), server side only.
//!
//! Everything here is pure: no sockets and no database. The stream code base64-decodes
//! `<auth/>`/`<response/>` (see [`decode_payload`]), drives a [`ScramServer`] or calls
//! [`parse_plain`], looks credentials up itself and turns a [`SaslError`] into
//! `<failure><{condition}/><text>…</text></failure>`.
//!
//! What the database keeps per account and hash is a [`StoredCredential`]: salt, iteration
//! count, StoredKey and ServerKey. The password itself is never stored.

use std::fmt;

use base64::Engine as _;

mod credential;
pub mod plain;
pub mod scram;
mod scram_msg;
mod verifier;

pub use credential::{
    init_unknown_user_secret, set_unknown_user_iterations, StoredCredential, DEFAULT_ITERATIONS,
    MIN_ITERATIONS,
};
pub use plain::{check_plain_password, parse_plain, PlainCredentials};
pub use scram::{ClientFirst, ScramServer};

/// A defined condition of RFC 6120 §6.5, the child element of `<failure/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaslCondition {
    Aborted,
    AccountDisabled,
    CredentialsExpired,
    EncryptionRequired,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    MechanismTooWeak,
    NotAuthorized,
    TemporaryAuthFailure,
}

impl SaslCondition {
    /// The element name as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslCondition::Aborted => "aborted",
            SaslCondition::AccountDisabled => "account-disabled",
            SaslCondition::CredentialsExpired => "credentials-expired",
            SaslCondition::EncryptionRequired => "encryption-required",
            SaslCondition::IncorrectEncoding => "incorrect-encoding",
            SaslCondition::InvalidAuthzid => "invalid-authzid",
            SaslCondition::InvalidMechanism => "invalid-mechanism",
            SaslCondition::MalformedRequest => "malformed-request",
            SaslCondition::MechanismTooWeak => "mechanism-too-weak",
            SaslCondition::NotAuthorized => "not-authorized",
            SaslCondition::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// Why an exchange failed: an RFC 6120 condition plus a short English text.
///
/// The text is a `&'static str` on purpose: it may be sent to the client in `<text/>`, so it
/// never echoes input and never says whether it was the user name or the password that was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslError {
    condition: SaslCondition,
    text: &'static str,
}

impl SaslError {
    pub fn new(condition: SaslCondition, text: &'static str) -> SaslError {
        SaslError { condition, text }
    }

    /// Shorthand for the most common failure, a message that breaks the grammar.
    pub(crate) fn malformed(text: &'static str) -> SaslError {
        SaslError::new(SaslCondition::MalformedRequest, text)
    }

    /// Wrong password, unknown user or failed channel binding: deliberately indistinguishable.
    pub(crate) fn not_authorized() -> SaslError {
        SaslError::new(SaslCondition::NotAuthorized, "authentication failed")
    }

    /// The RFC 6120 §6.5 element name, e.g. `"not-authorized"`.
    pub fn condition(&self) -> &'static str {
        self.condition.as_str()
    }

    pub fn kind(&self) -> SaslCondition {
        self.condition
    }

    /// Human-readable explanation, safe to send to the client.
    pub fn text(&self) -> &'static str {
        self.text
    }
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.condition(), self.text)
    }
}

impl std::error::Error for SaslError {}

/// The hash function of a SCRAM family member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// The name as used in mechanism names (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }

    /// Output size of H() and HMAC(), hence of StoredKey, ServerKey and ClientProof.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }
}

pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
pub const SCRAM_SHA_1_PLUS: &str = "SCRAM-SHA-1-PLUS";
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_1: &str = "SCRAM-SHA-1";
pub const PLAIN: &str = "PLAIN";

/// Mechanisms to offer in `<mechanisms/>`, strongest first.
///
/// -PLUS only when the TLS session can export `tls-exporter` data (TLS 1.3): offering it
/// without would make every channel-binding client fail. PLAIN only when the operator allows
/// it (and the caller must only do so over TLS): it hands the server the cleartext password.
pub fn mechanisms(channel_binding_available: bool, allow_plain: bool) -> Vec<&'static str> {
    let mut list = Vec::with_capacity(5);
    if channel_binding_available {
        list.extend([SCRAM_SHA_256_PLUS, SCRAM_SHA_1_PLUS]);
    }
    list.extend([SCRAM_SHA_256, SCRAM_SHA_1]);
    if allow_plain {
        list.push(PLAIN);
    }
    list
}

/// A mechanism the client selected in `<auth mechanism='…'/>`.
///
/// `from_name` knows every mechanism we implement; the caller must still check that the name
/// was in the list it offered on this stream (e.g. no PLAIN when disabled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Scram { hash: ScramHash, plus: bool },
    Plain,
}

impl Mechanism {
    /// Exact, case-sensitive match: RFC 4422 §3.1 names are upper case.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Some(match name {
            SCRAM_SHA_256_PLUS => Mechanism::Scram {
                hash: ScramHash::Sha256,
                plus: true,
            },
            SCRAM_SHA_1_PLUS => Mechanism::Scram {
                hash: ScramHash::Sha1,
                plus: true,
            },
            SCRAM_SHA_256 => Mechanism::Scram {
                hash: ScramHash::Sha256,
                plus: false,
            },
            SCRAM_SHA_1 => Mechanism::Scram {
                hash: ScramHash::Sha1,
                plus: false,
            },
            PLAIN => Mechanism::Plain,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Scram {
                hash: ScramHash::Sha256,
                plus: true,
            } => SCRAM_SHA_256_PLUS,
            Mechanism::Scram {
                hash: ScramHash::Sha1,
                plus: true,
            } => SCRAM_SHA_1_PLUS,
            Mechanism::Scram {
                hash: ScramHash::Sha256,
                plus: false,
            } => SCRAM_SHA_256,
            Mechanism::Scram {
                hash: ScramHash::Sha1,
                plus: false,
            } => SCRAM_SHA_1,
            Mechanism::Plain => PLAIN,
        }
    }
}

/// Decodes the character data of `<auth/>` or `<response/>` (RFC 6120 §6.4.2).
///
/// A lone `=` means an empty response, an empty element means no data; both give an empty
/// vector. Anything that is not canonical, padded base64 is `incorrect-encoding`, the condition
/// RFC 6120 reserves for exactly this. Whitespace is not allowed either.
pub fn decode_payload(text: &str) -> Result<Vec<u8>, SaslError> {
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| {
            SaslError::new(
                SaslCondition::IncorrectEncoding,
                "the data is not valid base64",
            )
        })
}

/// Encodes `<challenge/>`/`<success/>` data; empty data becomes `=` as RFC 6120 §6.4.6 asks.
pub fn encode_payload(data: &[u8]) -> String {
    if data.is_empty() {
        return "=".to_owned();
    }
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// SASLprep (RFC 4013) of a user name, refusing results that are empty.
pub(crate) fn prep_username(name: &str) -> Result<String, SaslError> {
    match stringprep::saslprep(name) {
        Ok(prepped) if !prepped.is_empty() => Ok(prepped.into_owned()),
        Ok(_) => Err(SaslError::malformed("the user name is empty")),
        Err(_) => Err(SaslError::malformed(
            "the user name contains characters SASLprep forbids",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_plus_only_with_channel_binding_and_plain_only_when_allowed() {
        assert_eq!(
            mechanisms(false, false),
            vec!["SCRAM-SHA-256", "SCRAM-SHA-1"]
        );
        assert_eq!(
            mechanisms(true, true),
            vec![
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1",
                "PLAIN"
            ]
        );
    }

    #[test]
    fn every_offered_name_parses_back_to_itself() {
        for name in mechanisms(true, true) {
            let mech = Mechanism::from_name(name).expect("offered names are known");
            assert_eq!(mech.name(), name);
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::from_name(""), None);
    }

    #[test]
    fn conditions_use_the_rfc_6120_names() {
        let err = SaslError::new(SaslCondition::TemporaryAuthFailure, "x");
        assert_eq!(err.condition(), "temporary-auth-failure");
        assert_eq!(SaslCondition::InvalidAuthzid.as_str(), "invalid-authzid");
        assert_eq!(
            SaslError::not_authorized().to_string(),
            "not-authorized: authentication failed"
        );
    }

    #[test]
    fn payloads_follow_rfc_6120_base64_rules() {
        assert_eq!(decode_payload("=").unwrap(), b"");
        assert_eq!(decode_payload("").unwrap(), b"");
        assert_eq!(decode_payload("bixuPXVzZXIs").unwrap(), b"n,n=user,");
        for bad in [
            "bixuPXVzZXI",
            "bix uPXVzZXIs",
            "bixuPXVzZXIs\n",
            "b!==",
            "bR==",
        ] {
            assert_eq!(
                decode_payload(bad).unwrap_err().condition(),
                "incorrect-encoding",
                "{bad:?}"
            );
        }
        assert_eq!(encode_payload(b""), "=");
        assert_eq!(encode_payload(b"v=x"), "dj14");
    }
}
