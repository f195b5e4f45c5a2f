//! HTTPS certificates that follow the files on disk.
//!
//! `hearth-acme` replaces the certificate and key files atomically when it renews. Rather than
//! needing a signal, the resolver looks at the files' modification times on each handshake (one
//! `stat` each, cheap next to a handshake) and reloads when they changed. A half-finished renewal
//! (new certificate, old key) fails the key check and the previous pair keeps serving.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, Default)]
pub struct CertResolver {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    paths: Option<(PathBuf, PathBuf)>,
    loaded: Option<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: (Option<SystemTime>, Option<SystemTime>, u64, u64),
    key: Arc<CertifiedKey>,
}

fn stamp(cert: &Path, key: &Path) -> Option<(Option<SystemTime>, Option<SystemTime>, u64, u64)> {
    let (c, k) = (std::fs::metadata(cert).ok()?, std::fs::metadata(key).ok()?);
    Some((c.modified().ok(), k.modified().ok(), c.len(), k.len()))
}

impl CertResolver {
    /// Serve the pair at these paths from now on (called at start and when setup completes).
    pub fn set_paths(&self, cert: PathBuf, key: PathBuf) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.paths.as_ref() != Some(&(cert.clone(), key.clone())) {
            s.paths = Some((cert, key));
            s.loaded = None;
        }
    }

    /// Whether paths are set (a box set up while we ran, e.g. by preseed, has none yet).
    pub fn has_paths(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .paths
            .is_some()
    }

    /// The current pair, reloading it if the files changed. `None` before any certificate exists.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (cert, key) = s.paths.clone()?;
        let Some(now) = stamp(&cert, &key) else {
            return s.loaded.as_ref().map(|l| l.key.clone());
        };
        if let Some(l) = &s.loaded {
            if l.stamp == now {
                return Some(l.key.clone());
            }
        }
        match load(&cert, &key) {
            Ok(k) => {
                log::info!("serving HTTPS with the certificate in {}", cert.display());
                s.loaded = Some(Loaded {
                    stamp: now,
                    key: k.clone(),
                });
                Some(k)
            }
            Err(e) => {
                log::warn!("keeping the previous certificate: {e}");
                s.loaded.as_ref().map(|l| l.key.clone())
            }
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("unusable key {}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{} does not belong to {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(ck))
}

/// The rustls server config for the HTTPS listener.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_replaced_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let r = CertResolver::default();
        r.set_paths(c.clone(), k.clone());
        assert!(r.current().is_none(), "no files yet");
        let write = |names: &[&str]| {
            let p = hearthd::certs::self_signed(
                &names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            hearthd::fsutil::write_atomically(&k, p.key_pem.as_bytes(), 0o600).unwrap();
            hearthd::fsutil::write_atomically(&c, p.cert_pem.as_bytes(), 0o644).unwrap();
            p.cert_pem
        };
        write(&["one.test"]);
        let first = r.current().unwrap();
        assert!(
            Arc::ptr_eq(&first, &r.current().unwrap()),
            "unchanged files are not reloaded"
        );
        // Same-second rewrites must still be noticed: the longer name changes the file size.
        write(&["a-longer-name.test"]);
        let second = r.current().unwrap();
        assert_ne!(first.cert[0], second.cert[0]);
        // A key that does not match keeps the previous pair.
        std::fs::write(
            &k,
            hearthd::certs::self_signed(&["x.test".into()])
                .unwrap()
                .key_pem,
        )
        .unwrap();
        assert_eq!(r.current().unwrap().cert[0], second.cert[0]);
    }
}
