//! The owner's SSH public keys: checking a key line as a person pastes it (from `~/.ssh/id_ed25519.pub`),
//! and the file the image's sshd reads them from.
//!
//! On the image the keys log in as root (`PermitRootLogin prohibit-password`): the box has one owner and
//! no other Linux users, so a second login with passwordless sudo would only add a path to the same power.
//! sshd does not read this file directly: the file belongs to hearth-web (which edits it from the admin
//! pages) and sshd's StrictModes refuses key files owned by anyone but root or the user logging in. sshd
//! runs `/usr/lib/hearth/ssh-authorized-keys` as `AuthorizedKeysCommand` (as user hearth-web), which
//! prints this file for root. With the file empty or missing, ssh.service does not start at all.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Where the image keeps the keys (hearth-web's own directory, 0700, outside /var/lib/hearth so that
/// no other service account can swap it).
pub const DEFAULT_SSH_KEYS_PATH: &str = "/var/lib/hearth-ssh/authorized_keys";
/// Keys kept at most: a household's laptops and phones, with room to spare; bounds the file and the page.
pub const MAX_KEYS: usize = 64;
/// Longest key line accepted: an 8192-bit RSA key is ~1.4 KB in base64; 16 KB leaves room for
/// certificates-free keys with long comments, while refusing pasted junk.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Longest comment kept (the part after the key, usually `user@laptop`).
const MAX_COMMENT_CHARS: usize = 200;
/// RSA keys below this are refused: OpenSSH itself warns about them and they are breakable.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 16384;

/// Key types sshd accepts in authorized_keys that we take, with the expected public-key blob length
/// when it is fixed (type string, curve name, point; see RFC 4253, 5656, 8709 and OpenSSH's PROTOCOL.u2f).
const KEY_TYPES: &[(&str, Option<usize>)] = &[
    ("ssh-ed25519", Some(4 + 11 + 4 + 32)),
    ("ecdsa-sha2-nistp256", Some(4 + 19 + 4 + 8 + 4 + 65)),
    ("ecdsa-sha2-nistp384", Some(4 + 19 + 4 + 8 + 4 + 97)),
    ("ecdsa-sha2-nistp521", Some(4 + 19 + 4 + 8 + 4 + 133)),
    ("sk-ssh-ed25519@openssh.com", None),
    ("sk-ecdsa-sha2-nistp256@openssh.com", None),
    ("ssh-rsa", None),
];

/// One checked public key: `type base64 [comment]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    pub kind: String,
    /// The base64 text as given (canonical: it decoded and re-encodes to the same text).
    pub body: String,
    pub comment: String,
}

impl AuthorizedKey {
    /// Checks one key line; the error says what is wrong in words for the person who pasted it.
    pub fn parse(line: &str) -> Result<AuthorizedKey, String> {
        let line = line.trim();
        if line.is_empty() {
            return Err("the key is empty: paste the whole line of your .pub file".into());
        }
        // On the words, not the raw text: "PRIVATE<tab>KEY" in a comment would otherwise pass here
        // and then be refused when the line we write (words joined by one space) is read back.
        let words = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if words.contains("PRIVATE KEY") {
            return Err("this is a private key: never share it. Give the public key, the one line in the file ending in .pub (e.g. ~/.ssh/id_ed25519.pub)".into());
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(format!(
                "the key is {} bytes long, more than the {MAX_LINE_BYTES} a public key needs",
                line.len()
            ));
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err("the key spans several lines or holds control characters: give one key, on one line".into());
        }
        let mut parts = line.split_whitespace();
        let kind = parts.next().unwrap_or_default();
        let Some((_, fixed_len)) = KEY_TYPES.iter().find(|(k, _)| *k == kind) else {
            let known: Vec<&str> = KEY_TYPES.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "{:?} is not a key type this box accepts (key options before the type are not accepted either); a public key starts with one of: {}",
                truncate(kind, 40),
                known.join(", ")
            ));
        };
        let body = parts
            .next()
            .ok_or_else(|| format!("the {kind} key has no key data after its type"))?;
        let blob = STANDARD
            .decode(body)
            .map_err(|_| format!("the {kind} key's data is not valid base64: was it cut short or broken across lines?"))?;
        let inner_kind = ssh_string(&blob, 0)
            .ok_or_else(|| format!("the {kind} key's data is too short to be a key"))?;
        if inner_kind.0 != kind.as_bytes() {
            return Err(format!(
                "the key says {kind} but its data is a {:?} key: copy the line again unchanged",
                truncate(&String::from_utf8_lossy(inner_kind.0), 40)
            ));
        }
        match fixed_len {
            Some(n) if blob.len() != *n => {
                return Err(format!(
                "the {kind} key's data is {} bytes, a {kind} key has {n}: it was cut or changed",
                blob.len()
            ))
            }
            Some(_) => {}
            None if kind == "ssh-rsa" => {
                let bits = rsa_bits(&blob, inner_kind.1).ok_or_else(|| {
                    "the ssh-rsa key's data is malformed: copy the line again unchanged".to_string()
                })?;
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(format!("the ssh-rsa key has {bits} bits; use {MIN_RSA_BITS} to {MAX_RSA_BITS}, or better an ed25519 key (ssh-keygen -t ed25519)"));
                }
            }
            None => {
                if !(32..=1024).contains(&blob.len()) {
                    return Err(format!("the {kind} key's data has an unusual length ({} bytes): copy the line again unchanged", blob.len()));
                }
            }
        }
        let comment = parts.collect::<Vec<_>>().join(" ");
        if comment.chars().count() > MAX_COMMENT_CHARS {
            return Err(format!(
                "the comment after the key is longer than {MAX_COMMENT_CHARS} characters"
            ));
        }
        Ok(AuthorizedKey {
            kind: kind.to_string(),
            body: body.to_string(),
            comment,
        })
    }

    /// `SHA256:…`, as `ssh-keygen -lf` and ssh clients print it.
    pub fn fingerprint(&self) -> String {
        let blob = STANDARD.decode(&self.body).unwrap_or_default();
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&blob)))
    }

    /// The authorized_keys line.
    pub fn line(&self) -> String {
        if self.comment.is_empty() {
            format!("{} {}", self.kind, self.body)
        } else {
            format!("{} {} {}", self.kind, self.body, self.comment)
        }
    }

    /// Same key, whatever the comment says.
    pub fn same_key(&self, other: &AuthorizedKey) -> bool {
        self.kind == other.kind && self.body == other.body
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// An SSH wire-format string at `at`: its bytes and the offset after it.
fn ssh_string(blob: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = u32::from_be_bytes(blob.get(at..at + 4)?.try_into().ok()?) as usize;
    let start = at + 4;
    Some((blob.get(start..start.checked_add(len)?)?, start + len))
}

/// The modulus size of an `ssh-rsa` blob (type, e, n), or `None` if the blob is not exactly that.
fn rsa_bits(blob: &[u8], after_type: usize) -> Option<usize> {
    let (_e, at) = ssh_string(blob, after_type)?;
    let (n, end) = ssh_string(blob, at)?;
    if end != blob.len() {
        return None;
    }
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return None,
    };
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

/// Reads the keys file; a missing file is no keys. Errors name the file and line.
pub fn read_keys(path: &Path) -> Result<Vec<AuthorizedKey>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        keys.push(
            AuthorizedKey::parse(t).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(keys)
}

/// Writes the keys file atomically (0600: only its owner, hearth-web, reads it). Writing no keys leaves
/// an empty file, which keeps sshd stopped.
pub fn write_keys(path: &Path, keys: &[AuthorizedKey]) -> Result<(), String> {
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "at most {MAX_KEYS} SSH keys are kept; remove one first"
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text: String = keys.iter().map(|k| k.line() + "\n").collect();
    crate::fsutil::write_atomically(path, text.as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Adds the keys not already in the file (by key, not comment); returns how many were new.
pub fn add_keys(path: &Path, new: &[AuthorizedKey]) -> Result<usize, String> {
    let mut keys = read_keys(path)?;
    let before = keys.len();
    for k in new {
        if !keys.iter().any(|have| have.same_key(k)) {
            keys.push(k.clone());
        }
    }
    let added = keys.len() - before;
    if added > 0 {
        write_keys(path, &keys)?;
    }
    Ok(added)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Made with `ssh-keygen -t ed25519 -C me@laptop` (the public half; the private one was deleted).
    pub const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH8G4zLZjmsV9B+HuowZPyuWUOqt+ESoEX34/v5kJGvI me@laptop";
    /// The same key with its last 4 base64 characters cut (still valid base64, 3 bytes short).
    const ED25519_CUT: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH8G4zLZjmsV9B+HuowZPyuWUOqt+ESoEX34/v5k me@laptop";

    fn rsa_line(bits: usize) -> String {
        let mut blob = Vec::new();
        let mut put = |b: &[u8]| {
            blob.extend_from_slice(&(b.len() as u32).to_be_bytes());
            blob.extend_from_slice(b);
        };
        put(b"ssh-rsa");
        put(&[1, 0, 1]);
        let mut n = vec![0u8; bits / 8 + 1];
        n[1] = 0x80;
        put(&n);
        format!("ssh-rsa {} rsa@box", STANDARD.encode(&blob))
    }

    #[test]
    fn a_private_key_marker_split_by_tabs_is_refused_as_written_back() {
        // Found by fuzzing: the check must see the words as `line()` writes them.
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJM+Fxrl8oUCmc598sApqXdMhT1f9k+byajSTq0geXaM";
        for comment in ["PRIVATE\tKEY", "XPRIVATE \t KEYZ"] {
            let err = AuthorizedKey::parse(&format!("{key} {comment}")).unwrap_err();
            assert!(err.contains("private key"), "{comment:?}: {err}");
        }
    }

    #[test]
    fn accepts_a_pasted_ed25519_key_and_fingerprints_it() {
        let k = AuthorizedKey::parse(&format!("  {ED25519}\n")).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.comment, "me@laptop");
        assert_eq!(k.line(), ED25519);
        // What `ssh-keygen -lf` printed for this key.
        assert_eq!(
            k.fingerprint(),
            "SHA256:qckx1xhMhOcYG8MVe0uFmIwyqspVUcwGIYSy9DSy+eM"
        );
    }

    #[test]
    fn refuses_what_is_not_a_public_key() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
            ("ssh-dss AAAAB3NzaC1kc3MAAACBAP me", "not a key type"),
            ("from=\"10.0.0.1\" ssh-ed25519 AAAA", "not a key type"),
            ("ssh-ed25519", "no key data"),
            ("ssh-ed25519 not*base64!", "base64"),
            (ED25519_CUT, "cut or changed"),
            ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB", "data is a"),
            ("ssh-ed25519 AAAA\nssh-ed25519 BBBB", "one line"),
        ];
        for (line, want) in cases {
            let e = AuthorizedKey::parse(line).unwrap_err();
            assert!(e.contains(want), "{line:?}: {e}");
        }
    }

    #[test]
    fn rsa_keys_need_2048_bits() {
        assert!(AuthorizedKey::parse(&rsa_line(3072)).is_ok());
        let e = AuthorizedKey::parse(&rsa_line(1024)).unwrap_err();
        assert!(e.contains("1024 bits"), "{e}");
    }

    #[test]
    fn the_file_round_trips_and_adding_twice_keeps_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/authorized_keys");
        assert_eq!(read_keys(&path).unwrap(), vec![]);
        let k = AuthorizedKey::parse(ED25519).unwrap();
        assert_eq!(add_keys(&path, std::slice::from_ref(&k)).unwrap(), 1);
        let other_comment = AuthorizedKey {
            comment: "renamed".into(),
            ..k.clone()
        };
        assert_eq!(add_keys(&path, &[other_comment]).unwrap(), 0);
        assert_eq!(read_keys(&path).unwrap(), vec![k]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        write_keys(&path, &[]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn a_broken_file_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, format!("# mine\n{ED25519}\nssh-ed25519 xx\n")).unwrap();
        let e = read_keys(&path).unwrap_err();
        assert!(e.contains("authorized_keys:3:"), "{e}");
    }
}
