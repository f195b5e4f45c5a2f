//! A SCRAM credential as one line of text, for handing an account to the box without its password
//! (`password_hash` in `hearth-setup.toml`, `hearthctl hash-password`).
//!
//! The format is PostgreSQL's (`pg_authid.rolpassword`), so tools that already write it can be used:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, the three values in standard base64.
//! `SCRAM-SHA-1$…` is read too.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{ScramHash, StoredCredential, MIN_ITERATIONS};

impl StoredCredential {
    /// The credential in PostgreSQL's verifier format.
    pub fn to_verifier(&self) -> String {
        format!(
            "SCRAM-{}${}:{}${}:{}",
            self.hash.name(),
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }

    /// Reads a verifier; the error says what is wrong in words a person can act on.
    pub fn from_verifier(text: &str) -> Result<StoredCredential, String> {
        let text = text.trim();
        let shape = "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> \
                     (as `hearthctl hash-password` prints it)";
        let mut parts = text.split('$');
        let (Some(mech), Some(params), Some(keys), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("not a SCRAM verifier: {shape}"));
        };
        let hash = match mech {
            "SCRAM-SHA-256" => ScramHash::Sha256,
            "SCRAM-SHA-1" => ScramHash::Sha1,
            other => {
                return Err(format!(
                    "unknown mechanism {other:?}: use SCRAM-SHA-256 ({shape})"
                ))
            }
        };
        let (Some((iterations, salt)), Some((stored_key, server_key))) =
            (params.split_once(':'), keys.split_once(':'))
        else {
            return Err(format!("missing ':' in the verifier: {shape}"));
        };
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| format!("the iteration count {iterations:?} is not a number"))?;
        if iterations < MIN_ITERATIONS {
            return Err(format!(
                "the iteration count {iterations} is below the {MIN_ITERATIONS} RFC 7677 asks for"
            ));
        }
        let decode = |what: &str, v: &str| {
            STANDARD
                .decode(v)
                .map_err(|_| format!("the {what} is not valid base64"))
        };
        let salt = decode("salt", salt)?;
        if salt.is_empty() {
            return Err("the salt is empty".into());
        }
        let (stored_key, server_key) = (
            decode("StoredKey", stored_key)?,
            decode("ServerKey", server_key)?,
        );
        let len = hash.output_len();
        if stored_key.len() != len || server_key.len() != len {
            return Err(format!(
                "StoredKey and ServerKey of SCRAM-{} must be {len} bytes each",
                hash.name()
            ));
        }
        Ok(StoredCredential {
            hash,
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_the_password_still_verifies() {
        let c = StoredCredential::derive(ScramHash::Sha256, "correct horse", 4096).unwrap();
        let text = c.to_verifier();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        let back = StoredCredential::from_verifier(&text).unwrap();
        assert_eq!(back, c);
        assert!(back.verify_password("correct horse"));
        assert!(!back.verify_password("wrong horse"));
    }

    #[test]
    fn rfc7677_vector_survives_the_text_form() {
        // RFC 7677 §3: user "user", password "pencil", this salt, 4096 iterations.
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let c =
            StoredCredential::derive_with_salt(ScramHash::Sha256, "pencil", salt, 4096).unwrap();
        let text = c.to_verifier();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{text}"
        );
        let parsed = StoredCredential::from_verifier(&text).unwrap();
        assert!(parsed.verify_password("pencil"));
    }

    #[test]
    fn malformed_verifiers_are_refused_with_a_reason() {
        let good = StoredCredential::derive(ScramHash::Sha256, "pw-pw-pw-pw", 4096)
            .unwrap()
            .to_verifier();
        let cases = [
            ("", "not a SCRAM verifier"),
            ("md5abcdef", "not a SCRAM verifier"),
            ("SCRAM-SHA-512$4096:c2FsdA==$a:b", "unknown mechanism"),
            ("SCRAM-SHA-256$4096$a:b", "missing ':'"),
            ("SCRAM-SHA-256$many:c2FsdA==$a:b", "not a number"),
            ("SCRAM-SHA-256$1000:c2FsdA==$a:b", "below the 4096"),
            ("SCRAM-SHA-256$4096:!!!$a:b", "salt is not valid base64"),
            ("SCRAM-SHA-256$4096:c2FsdA==$YWJj:YWJj", "must be 32 bytes"),
        ];
        for (text, want) in cases {
            let err = StoredCredential::from_verifier(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // A SHA-1 verifier's keys are 20 bytes: a SHA-256 one relabelled does not pass.
        let relabelled = good.replacen("SCRAM-SHA-256", "SCRAM-SHA-1", 1);
        assert!(StoredCredential::from_verifier(&relabelled).is_err());
    }
}
