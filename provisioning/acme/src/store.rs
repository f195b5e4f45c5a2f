//! Putting a new key and chain in place so that `hearthd` never reads a key that does not belong to
//! its certificate, even if the power is cut half-way.
//!
//! Two files cannot be renamed at once, so we stage both (`key.new` first, then `cert.new`, whose
//! presence means "staging complete"), copy the current pair to `*.prev`, then rename the key and
//! the certificate. A run that finds `cert.new` finishes the renames before doing anything else;
//! a lone `key.new` is an unfinished staging and is deleted.

use hearthd::fsutil::write_atomically;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Certificates are public; keys are readable by the owner and the group (`hearthd` and
/// `hearth-web` read them through their group).
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o640;

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn prev_path(p: &Path) -> PathBuf {
    with_suffix(p, ".prev")
}

fn new_path(p: &Path) -> PathBuf {
    with_suffix(p, ".new")
}

fn sync_dir(p: &Path) -> io::Result<()> {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)?.sync_all()
}

/// Installs a new pair, keeping the old one as `*.prev`.
pub fn install(
    cert_path: &Path,
    key_path: &Path,
    chain_pem: &str,
    key_pem: &str,
) -> Result<(), String> {
    let err = |what: &str, p: &Path, e: io::Error| format!("cannot {what} {}: {e}", p.display());
    for p in [cert_path, key_path] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| err("create", dir, e))?;
        }
    }
    finish_interrupted(cert_path, key_path)?;
    let (cert_new, key_new) = (new_path(cert_path), new_path(key_path));
    write_atomically(&key_new, key_pem.as_bytes(), KEY_MODE)
        .map_err(|e| err("write", &key_new, e))?;
    write_atomically(&cert_new, chain_pem.as_bytes(), CERT_MODE)
        .map_err(|e| err("write", &cert_new, e))?;
    for (p, mode) in [(cert_path, CERT_MODE), (key_path, KEY_MODE)] {
        match fs::read(p) {
            Ok(old) => write_atomically(&prev_path(p), &old, mode)
                .map_err(|e| err("keep a copy of", p, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("read", p, e)),
        }
    }
    finish_interrupted(cert_path, key_path)
}

/// Completes the renames of a staged pair, if there is one (see the module comment).
pub fn finish_interrupted(cert_path: &Path, key_path: &Path) -> Result<(), String> {
    let (cert_new, key_new) = (new_path(cert_path), new_path(key_path));
    let err = |p: &Path, e: io::Error| format!("cannot move {} into place: {e}", p.display());
    if cert_new.exists() {
        if key_new.exists() {
            fs::rename(&key_new, key_path).map_err(|e| err(&key_new, e))?;
            sync_dir(key_path).map_err(|e| err(&key_new, e))?;
        }
        fs::rename(&cert_new, cert_path).map_err(|e| err(&cert_new, e))?;
        sync_dir(cert_path).map_err(|e| err(&cert_new, e))?;
    } else if key_new.exists() {
        let _ = fs::remove_file(&key_new);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_previous_pair() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("tls/cert.pem"), d.path().join("tls/key.pem"));
        install(&c, &k, "cert1", "key1").unwrap();
        assert!(!prev_path(&c).exists());
        install(&c, &k, "cert2", "key2").unwrap();
        assert_eq!(fs::read_to_string(&c).unwrap(), "cert2");
        assert_eq!(fs::read_to_string(&k).unwrap(), "key2");
        assert_eq!(fs::read_to_string(prev_path(&c)).unwrap(), "cert1");
        assert_eq!(fs::read_to_string(prev_path(&k)).unwrap(), "key1");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            KEY_MODE
        );
        let left: Vec<_> = fs::read_dir(d.path().join("tls"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 4, "{left:?}");
    }

    #[test]
    fn completes_a_pair_cut_off_between_renames() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("cert.pem"), d.path().join("key.pem"));
        install(&c, &k, "cert1", "key1").unwrap();
        // As if the power went after the key was renamed but before the certificate was.
        fs::write(&k, "key2").unwrap();
        fs::write(new_path(&c), "cert2").unwrap();
        finish_interrupted(&c, &k).unwrap();
        assert_eq!(fs::read_to_string(&c).unwrap(), "cert2");
        assert_eq!(fs::read_to_string(&k).unwrap(), "key2");
    }

    #[test]
    fn drops_an_unfinished_staging() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("cert.pem"), d.path().join("key.pem"));
        install(&c, &k, "cert1", "key1").unwrap();
        fs::write(new_path(&k), "key2").unwrap();
        finish_interrupted(&c, &k).unwrap();
        assert_eq!(fs::read_to_string(&k).unwrap(), "key1");
        assert!(!new_path(&k).exists());
    }
}
