//! SCRAM server (RFC 5802), SHA-256 flavour (RFC 7677), `tls-exporter` channel binding (RFC 9266).
//!
//! One [`ScramServer`] per `<auth/>`. It is single-use: any error, or any call out of order,
//! moves it to a final state from which every later call fails, so a caller cannot
//! accidentally give a client a second try on the same exchange.

use std::fmt;

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use subtle::{Choice, ConstantTimeEq};

use super::credential::{fake_credential, h, hmac, unknown_user_secret};
use super::scram_msg::{parse_client_final, parse_client_first, CbFlag};
use super::{SaslCondition, SaslError, ScramHash, StoredCredential};

/// RFC 9266: the only channel binding type we support; `tls-unique` does not exist in TLS 1.3.
const CB_TYPE: &str = "tls-exporter";

/// Random bytes in the server's half of the nonce; base64 makes them 32 printable characters.
const NONCE_BYTES: usize = 24;

/// What `client_first` learned, for the caller to look up the account and check the authzid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// SASLprepped authcid, not yet case-folded: the caller applies JID localpart rules.
    pub username: String,
    /// If present, the caller must refuse it (`invalid-authzid`) unless it is the user's own JID.
    pub authzid: Option<String>,
}

enum State {
    AwaitClientFirst,
    AwaitServerFirst {
        gs2_header: String,
        bound: bool,
        client_first_bare: String,
        nonce: String,
        username: String,
        secret: &'static [u8; 32],
    },
    AwaitClientFinal {
        gs2_header: String,
        bound: bool,
        nonce: String,
        /// client-first-message-bare "," server-first-message: AuthMessage minus its tail.
        auth_prefix: String,
        cred: StoredCredential,
        known_user: bool,
    },
    Finished,
}

/// Server side of one SCRAM exchange.
pub struct ScramServer {
    hash: ScramHash,
    plus: bool,
    cb_data: Option<Vec<u8>>,
    state: State,
    /// Set only by tests, to replay the RFC examples.
    fixed_server_nonce: Option<String>,
}

impl ScramServer {
    /// `cb_data`: the `tls-exporter` data of this TLS session (RFC 9266) when it can give it
    /// (TLS 1.3), else None. `plus`: the client chose the -PLUS mechanism.
    pub fn new(hash: ScramHash, plus: bool, cb_data: Option<Vec<u8>>) -> ScramServer {
        ScramServer {
            hash,
            plus,
            cb_data,
            state: State::AwaitClientFirst,
            fixed_server_nonce: None,
        }
    }

    /// Parses client-first-message and applies the channel binding rules of RFC 5802 §6.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, SaslError> {
        let State::AwaitClientFirst = std::mem::replace(&mut self.state, State::Finished) else {
            return Err(SaslError::malformed(
                "client-first-message was already received",
            ));
        };
        if self.plus && self.cb_data.is_none() {
            return Err(SaslError::new(
                SaslCondition::InvalidMechanism,
                "-PLUS needs TLS 1.3 channel binding, which this connection does not have",
            ));
        }
        let parsed = parse_client_first(msg)?;
        let bound = match (parsed.cb_flag, self.plus) {
            (CbFlag::Bound(CB_TYPE), true) => true,
            (CbFlag::Bound(_), true) => {
                return Err(SaslError::malformed(
                    "only tls-exporter channel binding is supported",
                ))
            }
            (CbFlag::Bound(_), false) => {
                return Err(SaslError::malformed(
                    "channel binding requires a -PLUS mechanism",
                ))
            }
            (CbFlag::None | CbFlag::ClientOnly, true) => {
                return Err(SaslError::malformed(
                    "a -PLUS mechanism requires channel binding",
                ))
            }
            // The client could bind but thinks we cannot, yet we can: someone stripped -PLUS
            // from our mechanism list on the way (RFC 5802 §6 "MUST fail").
            (CbFlag::ClientOnly, false) if self.cb_data.is_some() => {
                return Err(SaslError::new(
                    SaslCondition::NotAuthorized,
                    "channel binding was possible: refusing a possible downgrade",
                ))
            }
            (CbFlag::None | CbFlag::ClientOnly, false) => false,
        };
        let secret = unknown_user_secret()?;
        let server_nonce = match &self.fixed_server_nonce {
            Some(fixed) => fixed.clone(),
            None => {
                let mut raw = [0u8; NONCE_BYTES];
                getrandom::getrandom(&mut raw).map_err(|_| {
                    SaslError::new(
                        SaslCondition::TemporaryAuthFailure,
                        "no randomness available",
                    )
                })?;
                B64.encode(raw)
            }
        };
        self.state = State::AwaitServerFirst {
            gs2_header: parsed.gs2_header.to_owned(),
            bound,
            client_first_bare: parsed.bare.to_owned(),
            nonce: format!("{}{server_nonce}", parsed.client_nonce),
            username: parsed.username.clone(),
            secret,
        };
        Ok(ClientFirst {
            username: parsed.username,
            authzid: parsed.authzid,
        })
    }

    /// Returns server-first-message. `cred` is the account's credential for this hash, or None
    /// for an unknown user (or one without a credential for this hash): then salt and keys are
    /// derived from the user name and a server secret (see `init_unknown_user_secret`), so the
    /// answer looks like a real, stable one and the exchange fails only at `client_final`, like
    /// a wrong password.
    ///
    /// Called out of order it returns an empty message and the exchange is over.
    pub fn server_first(&mut self, cred: Option<&StoredCredential>) -> Vec<u8> {
        let State::AwaitServerFirst {
            gs2_header,
            bound,
            client_first_bare,
            nonce,
            username,
            secret,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Vec::new();
        };
        let (cred, known_user) = match cred {
            Some(c) if c.hash == self.hash && c.iterations > 0 => (c.clone(), true),
            _ => (fake_credential(self.hash, secret, &username), false),
        };
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&cred.salt),
            cred.iterations
        );
        let auth_prefix = format!("{client_first_bare},{server_first}");
        self.state = State::AwaitClientFinal {
            gs2_header,
            bound,
            nonce,
            auth_prefix,
            cred,
            known_user,
        };
        server_first.into_bytes()
    }

    /// Verifies client-final-message; on success returns server-final-message (`v=…`), which
    /// the caller sends in `<success/>`.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        let State::AwaitClientFinal {
            gs2_header,
            bound,
            nonce,
            auth_prefix,
            cred,
            known_user,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(SaslError::malformed(
                "client-final-message came out of order",
            ));
        };
        let parsed = parse_client_final(msg)?;
        if parsed.nonce != nonce {
            return Err(SaslError::malformed(
                "the nonce is not the one of this exchange",
            ));
        }
        if parsed.proof.len() != self.hash.output_len() {
            return Err(SaslError::malformed("the proof has the wrong length"));
        }
        // c= must repeat our gs2-header and, when bound, carry the same tls-exporter value we
        // see: a man in the middle terminating TLS sees a different one.
        let mut expected_cb = gs2_header.into_bytes();
        if bound {
            expected_cb.extend_from_slice(self.cb_data.as_deref().unwrap_or_default());
        }
        if !bool::from(parsed.channel_binding.ct_eq(&expected_cb)) {
            return Err(SaslError::new(
                SaslCondition::NotAuthorized,
                "channel binding does not match",
            ));
        }

        // RFC 5802 §3: recover ClientKey from the proof and check H(ClientKey) == StoredKey.
        let auth_message = format!("{auth_prefix},{}", parsed.without_proof);
        let client_signature = hmac(self.hash, &cred.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = parsed
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        // Unknown users run the same computation, then fail on `known_user`: same timing.
        let ok =
            h(self.hash, &client_key).ct_eq(&cred.stored_key) & Choice::from(u8::from(known_user));
        if !bool::from(ok) {
            return Err(SaslError::not_authorized());
        }
        let server_signature = hmac(self.hash, &cred.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    /// Replays an RFC example: fixes the server's half of the nonce.
    #[cfg(test)]
    pub(crate) fn with_server_nonce(mut self, nonce: &str) -> ScramServer {
        self.fixed_server_nonce = Some(nonce.to_owned());
        self
    }
}

/// Without key material: a `ScramServer` may end up in a log line.
impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.state {
            State::AwaitClientFirst => "await-client-first",
            State::AwaitServerFirst { .. } => "await-server-first",
            State::AwaitClientFinal { .. } => "await-client-final",
            State::Finished => "finished",
        };
        f.debug_struct("ScramServer")
            .field("hash", &self.hash)
            .field("plus", &self.plus)
            .field("channel_binding", &self.cb_data.is_some())
            .field("phase", &phase)
            .finish()
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
