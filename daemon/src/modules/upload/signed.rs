//! Signed upload URLs, the protocol of Prosody's `mod_http_upload_external` (version 2), so the
//! files can be served by `hearth-web` or by any HTTP server that speaks it.
//!
//! A slot's PUT URL is `<base>/<token>/<name>?v2=<mac>`, where `<mac>` is the lowercase hex
//! HMAC-SHA256, keyed with the shared secret, of `"<token>/<name>\0<size>\0<content type>"`
//! (the path as it reads after percent-decoding, the size in decimal). The server that takes the
//! PUT recomputes it from the request's own path, `Content-Length` and `Content-Type`, so a PUT
//! of another length or type, or to another path, does not match. The GET URL is the same
//! without the query.
//!
//! Everything here is pure and bounded; `hearth-web` parses request paths with it, and the
//! `upload_url` fuzz target feeds it arbitrary input.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest file name kept in a URL (bytes, after cleaning); longer names are shortened.
pub const MAX_NAME_BYTES: usize = 160;
/// A slot's token: 16 random bytes as lowercase hex.
pub const TOKEN_CHARS: usize = 32;
/// Longest request path `parse_path` looks at: a token, a name all percent-escaped, slashes.
const MAX_PATH_BYTES: usize = 8 + TOKEN_CHARS + 3 * MAX_NAME_BYTES + 16;

/// The part of an upload URL after the base: which slot, and the file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePath {
    pub token: String,
    pub name: String,
}

impl FilePath {
    /// What the MAC covers and what follows the base URL before escaping: `token/name`.
    pub fn signed_part(&self) -> String {
        format!("{}/{}", self.token, self.name)
    }
    /// The escaped form that follows the base URL.
    pub fn url_part(&self) -> String {
        format!("{}/{}", self.token, escape(&self.name))
    }
}

/// Why a request path is not an upload path; the web server answers 404 for all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    NotUnderBase,
    TooLong,
    BadToken,
    BadName,
}

/// The version-2 MAC, lowercase hex.
pub fn mac_v2(secret: &[u8], path: &FilePath, size: u64, content_type: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(path.signed_part().as_bytes());
    mac.update(b"\0");
    mac.update(size.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(content_type.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Checks a `v2` value in constant time.
pub fn verify_v2(
    secret: &[u8],
    path: &FilePath,
    size: u64,
    content_type: &str,
    given: &str,
) -> bool {
    use subtle::ConstantTimeEq;
    let want = mac_v2(secret, path, size, content_type);
    want.len() == given.len() && bool::from(want.as_bytes().ct_eq(given.as_bytes()))
}

/// Splits `/<prefix>/<token>/<escaped name>` (the request path, without query) into a `FilePath`.
/// `prefix` is the path the uploads live under, e.g. `/upload/`.
pub fn parse_path(path: &str, prefix: &str) -> Result<FilePath, PathError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let rest = path.strip_prefix(prefix).ok_or(PathError::NotUnderBase)?;
    let (token, name) = rest.split_once('/').ok_or(PathError::BadName)?;
    if !is_token(token) {
        return Err(PathError::BadToken);
    }
    let name = unescape(name).ok_or(PathError::BadName)?;
    if clean_name(&name) != name {
        return Err(PathError::BadName);
    }
    Ok(FilePath {
        token: token.to_string(),
        name,
    })
}

/// The value of `v2` in a query string, if it is there once and looks like a MAC.
pub fn v2_from_query(query: &str) -> Option<&str> {
    let mut found = None;
    for pair in query.split('&').take(16) {
        if let Some(v) = pair.strip_prefix("v2=") {
            if found.is_some() || v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            found = Some(v);
        }
    }
    found
}

pub fn is_token(s: &str) -> bool {
    s.len() == TOKEN_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh slot token.
pub fn new_token() -> Option<String> {
    let mut raw = [0u8; TOKEN_CHARS / 2];
    getrandom::getrandom(&mut raw).ok()?;
    Some(hex(&raw))
}

/// A file name safe to put in a URL path and a `Content-Disposition` header: the last path
/// component only, no control characters, not empty or a dot name, at most `MAX_NAME_BYTES`.
/// The client's name is a label for people; the file on disk is named by its token.
pub fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::new();
    for c in last.chars() {
        if c.is_control() || c == '"' {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    let out = out.trim().to_string();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        "file".to_string()
    } else {
        out
    }
}

/// Percent-escapes everything but RFC 3986's unreserved characters.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes percent-escapes; `None` for a broken escape or bytes that are not UTF-8.
pub fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = (*b.get(i + 1)? as char).to_digit(16)?;
            let lo = (*b.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a client's content type is a plain `type/subtype` (RFC 6838 names, no parameters):
/// the type ends up in a signed string and a response header, so nothing else gets through.
pub fn valid_content_type(t: &str) -> bool {
    let name = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric()
                    || (i > 0
                        && matches!(
                            b,
                            b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                        ))
            })
    };
    match t.split_once('/') {
        Some((a, b)) => name(a) && name(b),
        None => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(token: &str, name: &str) -> FilePath {
        FilePath {
            token: token.into(),
            name: name.into(),
        }
    }

    #[test]
    fn mac_matches_an_independent_hmac_of_the_documented_string() {
        // HMAC-SHA256(key "secret", "abc/x.jpg\01234\0image/jpeg"), computed with Python's hmac module.
        let got = mac_v2(b"secret", &fp("abc", "x.jpg"), 1234, "image/jpeg");
        assert_eq!(
            got,
            "761716df16b43f8512a954767817f108ce7907d906145ec83e23d24d5f2bca12"
        );
    }

    #[test]
    fn a_changed_size_type_or_path_does_not_verify() {
        let p = fp(&"a".repeat(32), "photo.jpg");
        let mac = mac_v2(b"k", &p, 10, "image/jpeg");
        assert!(verify_v2(b"k", &p, 10, "image/jpeg", &mac));
        assert!(!verify_v2(b"k", &p, 11, "image/jpeg", &mac));
        assert!(!verify_v2(b"k", &p, 10, "text/html", &mac));
        assert!(!verify_v2(
            b"k",
            &fp(&"a".repeat(32), "photo.png"),
            10,
            "image/jpeg",
            &mac
        ));
        assert!(!verify_v2(b"other", &p, 10, "image/jpeg", &mac));
        assert!(!verify_v2(b"k", &p, 10, "image/jpeg", &mac[..63]));
    }

    #[test]
    fn paths_round_trip_through_escaping() {
        let token = new_token().unwrap();
        let p = fp(&token, "très cool & fun?.jpg");
        let url = format!("/upload/{}", p.url_part());
        assert!(!url.contains(' ') && !url.contains('?') && !url.contains('&'));
        assert_eq!(parse_path(&url, "/upload/").unwrap(), p);
    }

    #[test]
    fn hostile_paths_are_refused() {
        let t = "0123456789abcdef0123456789abcdef";
        let bad = [
            format!("/other/{t}/a"),
            format!("/upload/{t}"),
            format!("/upload/{t}/"),
            format!("/upload/{t}/a%2Fb"),
            format!("/upload/{t}/..%2F..%2Fetc"),
            format!("/upload/{t}/%2e%2e"),
            format!("/upload/{t}/a%00b"),
            format!("/upload/{t}/a%zz"),
            format!("/upload/{t}/a%c3"),
            format!("/upload/{}/a", &t[1..]),
            format!("/upload/{}/a", t.to_uppercase()),
            format!("/upload/../{t}/a"),
            format!("/upload/{t}/{}", "a".repeat(4000)),
        ];
        for b in bad {
            assert!(parse_path(&b, "/upload/").is_err(), "{b}");
        }
    }

    #[test]
    fn names_are_cleaned_for_urls_and_headers() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\Users\\me\\a.png"), "a.png");
        assert_eq!(clean_name(".."), "file");
        assert_eq!(clean_name("a\"b\r\n.txt"), "ab.txt");
        assert_eq!(clean_name(""), "file");
        assert!(clean_name(&"é".repeat(500)).len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn query_gives_one_well_formed_mac() {
        let m = "ab".repeat(32);
        assert_eq!(v2_from_query(&format!("v2={m}")), Some(m.as_str()));
        assert_eq!(v2_from_query(&format!("x=1&v2={m}")), Some(m.as_str()));
        assert_eq!(v2_from_query(&format!("v2={m}&v2={m}")), None);
        assert_eq!(v2_from_query("v2=abc"), None);
        assert_eq!(v2_from_query("v=1"), None);
    }

    #[test]
    fn content_types_are_plain_names() {
        assert!(valid_content_type("image/jpeg"));
        assert!(valid_content_type(
            "application/vnd.oasis.opendocument.text"
        ));
        assert!(valid_content_type("image/svg+xml"));
        assert!(!valid_content_type("text/html; charset=utf-8"));
        assert!(!valid_content_type("text/html\r\nX: y"));
        assert!(!valid_content_type("text"));
        assert!(!valid_content_type("/x"));
    }
}
