//! The client messages of SCRAM as RFC 5802 §7 defines them: grammar only, no policy.
//!
//! Kept apart from the exchange in `scram.rs` so that every byte a client can send is checked
//! in one place, with one table of hostile inputs. Anything off-grammar is `malformed-request`.

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};

use super::{prep_username, SaslError};

/// Upper bound on one client message. Real clients send under 300 bytes; the allowance covers a
/// 1023-byte localpart fully escaped plus an authzid. It bounds what we keep for AuthMessage.
pub(crate) const MAX_MESSAGE_LEN: usize = 4096;

/// The gs2-cbind-flag: what the client says about channel binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CbFlag<'a> {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client supports it but believes the server does not.
    ClientOnly,
    /// `p=<cb-name>`: the client binds to this channel binding type.
    Bound(&'a str),
}

#[derive(Debug)]
pub(crate) struct ClientFirstMsg<'a> {
    pub cb_flag: CbFlag<'a>,
    /// The gs2-header exactly as sent: the client repeats it, base64'd, in `c=`.
    pub gs2_header: &'a str,
    pub authzid: Option<String>,
    /// client-first-message-bare, the first part of AuthMessage.
    pub bare: &'a str,
    /// Unescaped and SASLprepped.
    pub username: String,
    pub client_nonce: &'a str,
}

#[derive(Debug)]
pub(crate) struct ClientFinalMsg<'a> {
    /// Decoded `c=`: gs2-header, then the channel binding data if any.
    pub channel_binding: Vec<u8>,
    pub nonce: &'a str,
    /// client-final-message-without-proof, the last part of AuthMessage.
    pub without_proof: &'a str,
    pub proof: Vec<u8>,
}

/// `gs2-header client-first-message-bare`, where bare is `n=user,r=nonce[,extensions]`.
pub(crate) fn parse_client_first(msg: &[u8]) -> Result<ClientFirstMsg<'_>, SaslError> {
    let text = as_text(msg)?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or(SaslError::malformed("the GS2 header is missing"))?;
    let (authz, bare) = rest
        .split_once(',')
        .ok_or(SaslError::malformed("the GS2 header is incomplete"))?;
    let cb_flag = match flag {
        "n" => CbFlag::None,
        "y" => CbFlag::ClientOnly,
        _ => match flag.strip_prefix("p=") {
            Some(name) if is_cb_name(name) => CbFlag::Bound(name),
            _ => return Err(SaslError::malformed("the channel binding flag is invalid")),
        },
    };
    let authzid = match authz {
        "" => None,
        _ => match authz.strip_prefix("a=") {
            Some(name) => Some(unescape_saslname(name)?),
            None => {
                return Err(SaslError::malformed(
                    "the authorization identity is invalid",
                ))
            }
        },
    };
    let gs2_header = &text[..flag.len() + authz.len() + 2];

    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(SaslError::malformed(
            "SCRAM extensions (m=) are not supported",
        ));
    }
    let user = first
        .strip_prefix("n=")
        .ok_or(SaslError::malformed("the user name (n=) must come first"))?;
    let client_nonce =
        attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::malformed(
                "the nonce (r=) must follow the user name",
            ))?;
    check_nonce(client_nonce)?;
    attrs.try_for_each(check_extension)?;
    let username = prep_username(&unescape_saslname(user)?)?;
    Ok(ClientFirstMsg {
        cb_flag,
        gs2_header,
        authzid,
        bare,
        username,
        client_nonce,
    })
}

/// `c=cbind,r=nonce[,extensions],p=proof`.
pub(crate) fn parse_client_final(msg: &[u8]) -> Result<ClientFinalMsg<'_>, SaslError> {
    let text = as_text(msg)?;
    let (without_proof, last) = text
        .rsplit_once(',')
        .ok_or(SaslError::malformed("the message is incomplete"))?;
    let proof = last
        .strip_prefix("p=")
        .ok_or(SaslError::malformed("the proof (p=) must come last"))?;
    let mut attrs = without_proof.split(',');
    let cbind = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(SaslError::malformed(
            "the channel binding (c=) must come first",
        ))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(SaslError::malformed(
            "the nonce (r=) must follow the channel binding",
        ))?;
    check_nonce(nonce)?;
    attrs.try_for_each(check_extension)?;
    Ok(ClientFinalMsg {
        channel_binding: decode(cbind)?,
        nonce,
        without_proof,
        proof: decode(proof)?,
    })
}

/// Length, UTF-8 (RFC 5802 §7: "UTF8-char"), and no NUL, which no production allows.
fn as_text(msg: &[u8]) -> Result<&str, SaslError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(SaslError::malformed("the message is too long"));
    }
    let text =
        std::str::from_utf8(msg).map_err(|_| SaslError::malformed("the message is not UTF-8"))?;
    if text.contains('\0') {
        return Err(SaslError::malformed("the message contains a NUL character"));
    }
    Ok(text)
}

/// cb-name = 1*(ALPHA / DIGIT / "." / "-")
fn is_cb_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// printable = %x21-2B / %x2D-7E, at least one: ',' is already excluded by the split.
fn check_nonce(nonce: &str) -> Result<(), SaslError> {
    if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(SaslError::malformed(
            "the nonce is empty or not printable ASCII",
        ));
    }
    Ok(())
}

/// Optional extensions are `attr=value` and RFC 5802 §5 says unknown ones are ignored. The
/// reserved `m` and the letters SCRAM itself uses can only mean a confused or hostile client.
fn check_extension(attr: &str) -> Result<(), SaslError> {
    let bytes = attr.as_bytes();
    match bytes {
        [b'm', b'=', ..] => Err(SaslError::malformed(
            "SCRAM extensions (m=) are not supported",
        )),
        [b'a' | b'n' | b'r' | b'c' | b's' | b'i' | b'p' | b'v' | b'e', b'=', ..] => Err(
            SaslError::malformed("an attribute is out of order or repeated"),
        ),
        [letter, b'=', _, ..] if letter.is_ascii_alphabetic() => Ok(()),
        _ => Err(SaslError::malformed(
            "an attribute is not of the form x=value",
        )),
    }
}

/// saslname: ',' and '=' arrive as "=2C" and "=3D"; any other '=' is an error (RFC 5802 §5.1).
fn unescape_saslname(name: &str) -> Result<String, SaslError> {
    if name.is_empty() {
        return Err(SaslError::malformed("a name is empty"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos..pos + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => {
                return Err(SaslError::malformed(
                    "a name contains '=' that is not =2C or =3D",
                ))
            }
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Base64 inside SCRAM attributes; failures are grammar errors, not `incorrect-encoding`,
/// which RFC 6120 keeps for the outer XML payload.
fn decode(value: &str) -> Result<Vec<u8>, SaslError> {
    B64.decode(value)
        .map_err(|_| SaslError::malformed("an attribute is not valid base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plain_client_first_message() {
        let m = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!(m.cb_flag, CbFlag::None);
        assert_eq!(
            (m.gs2_header, m.bare),
            ("n,,", "n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        );
        assert_eq!(
            (m.username.as_str(), m.client_nonce, m.authzid),
            ("user", "fyko+d2lbbFgONRv9qkxdawL", None)
        );
    }

    #[test]
    fn parses_authzid_escapes_binding_and_extensions() {
        let m = parse_client_first(b"p=tls-exporter,a=odd=2Cname=3D,n=a=2Cb=3Dc,r=x,x=ignored")
            .unwrap();
        assert_eq!(m.cb_flag, CbFlag::Bound("tls-exporter"));
        assert_eq!(m.gs2_header, "p=tls-exporter,a=odd=2Cname=3D,");
        assert_eq!(
            (m.authzid.as_deref(), m.username.as_str()),
            (Some("odd,name="), "a,b=c")
        );
        let m = parse_client_first("y,a=juliet@example.org,n=j\u{fc}rgen\u{ad},r=x".as_bytes())
            .unwrap();
        assert_eq!(
            (m.cb_flag, m.authzid.as_deref()),
            (CbFlag::ClientOnly, Some("juliet@example.org"))
        );
        assert_eq!(m.username, "j\u{fc}rgen", "SASLprep drops the soft hyphen");
    }

    #[test]
    fn parses_a_client_final_message() {
        let m = parse_client_final(b"c=biws,r=abc,p=dj14").unwrap();
        assert_eq!(
            (m.channel_binding.as_slice(), m.nonce),
            (&b"n,,"[..], "abc")
        );
        assert_eq!(
            (m.without_proof, m.proof.as_slice()),
            ("c=biws,r=abc", &b"v=x"[..])
        );
    }

    /// Hostile or broken client-first messages: every one is refused, none panics.
    #[test]
    fn rejects_malformed_client_first_messages() {
        let long = format!("n,,n=user,r={}", "x".repeat(MAX_MESSAGE_LEN));
        let bad: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=user,r=abc",               // unknown flag
            b"p=,,n=user,r=abc",              // empty cb-name
            b"p=tls exporter,,n=user,r=abc",  // space in cb-name
            b"n,a=,n=user,r=abc",             // empty authzid
            b"n,b=x,n=user,r=abc",            // not an authzid
            b"n,a=ju=liet,n=user,r=abc",      // bad escape in authzid
            b"n,,m=ext,n=user,r=abc",         // reserved mandatory extension
            b"n,,n=user,r=abc,m=ext",         // m= later on
            b"n,,r=abc,n=user",               // wrong order
            b"n,,n=user",                     // no nonce
            b"n,,n=user,r=",                  // empty nonce
            b"n,,n=user,r=ab\x7fc",           // DEL in nonce
            "n,,n=user,r=n\u{e9}".as_bytes(), // non-ASCII nonce
            b"n,,n=user,r=abc,r=def",         // repeated attribute
            b"n,,n=user,r=abc,foo",           // extension without '='
            b"n,,n=user,r=abc,",              // trailing comma
            b"n,,n=,r=abc",                   // empty user
            b"n,,n=us=2Xer,r=abc",            // bad escape
            b"n,,n=user=,r=abc",              // '=' at the end
            b"n,,n=user=2,r=abc",             // truncated escape
            b"n,,n=us=2cer,r=abc",            // escapes are upper case
            b"n,,n=\xff\xfe,r=abc",           // not UTF-8
            b"n,,n=us\0er,r=abc",             // NUL
            b"n,,n=us\x07er,r=abc",           // control character: SASLprep forbids it
            b"n,,n=\xc2\xad,r=abc",           // SASLprep maps it to nothing: empty
            long.as_bytes(),
        ];
        for msg in bad {
            let err = parse_client_first(msg).expect_err(&String::from_utf8_lossy(msg));
            assert_eq!(
                err.condition(),
                "malformed-request",
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn rejects_malformed_client_final_messages() {
        let bad: &[&[u8]] = &[
            b"",
            b"c=biws,r=abc",        // no proof
            b"c=biws,p=dj14,r=abc", // proof not last
            b"r=abc,c=biws,p=dj14", // wrong order
            b"c=biws,p=dj14",       // no nonce
            b"c=bi!s,r=abc,p=dj14", // bad base64 in c=
            b"c=biws,r=abc,p=dj1",  // bad base64 in p=
            b"c=biws,r=abc,m=x,p=dj14",
            b"c=biws,r=abc,c=biws,p=dj14",
            b"c=biws,r=,p=dj14",
            b"c=biws,r=a\xffc,p=dj14",
        ];
        for msg in bad {
            let err = parse_client_final(msg).expect_err(&String::from_utf8_lossy(msg));
            assert_eq!(
                err.condition(),
                "malformed-request",
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    /// Every truncation and many single-byte changes of valid messages: no panic, whatever the
    /// outcome. Cheap stand-in for a fuzzer.
    #[test]
    fn mutated_messages_never_panic() {
        let samples: [&[u8]; 2] = [
            b"p=tls-exporter,a=a=2Cb,n=us=3Der,r=abc,x=y",
            b"c=biws,r=abc,x=1,p=dj14",
        ];
        for sample in samples {
            for cut in 0..=sample.len() {
                let _ = parse_client_first(&sample[..cut]);
                let _ = parse_client_final(&sample[..cut]);
            }
            for i in 0..sample.len() {
                for b in [0u8, b',', b'=', b'\xff', b'\xc3', b'a', b'2', b'p'] {
                    let mut m = sample.to_vec();
                    m[i] = b;
                    let _ = parse_client_first(&m);
                    let _ = parse_client_final(&m);
                }
            }
        }
    }
}
