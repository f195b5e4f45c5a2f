//! TLS: the rustls server configuration, built from the PEM files in `[tls]` and swapped in place
//! on reload, so new connections get a renewed certificate while existing ones keep theirs.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// ALPN for XMPP over direct TLS (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// Loads a certificate chain and key and builds a server config (ring provider, TLS 1.2+1.3).
pub fn load_server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate file {} is not valid PEM: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate file {} contains no certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    // Session tickets cost memory per connection and help little for long-lived XMPP streams.
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The current TLS configurations for STARTTLS and direct TLS; replaced whole on reload.
pub struct TlsStore {
    paths: (std::path::PathBuf, std::path::PathBuf),
    current: RwLock<(Arc<ServerConfig>, Arc<ServerConfig>)>,
}

impl TlsStore {
    pub fn load(cert: &Path, key: &Path) -> Result<TlsStore, String> {
        let pair = Self::build(cert, key)?;
        Ok(TlsStore {
            paths: (cert.to_path_buf(), key.to_path_buf()),
            current: RwLock::new(pair),
        })
    }

    fn build(cert: &Path, key: &Path) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), String> {
        let starttls = load_server_config(cert, key)?;
        let mut direct = starttls.clone();
        direct.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
        Ok((Arc::new(starttls), Arc::new(direct)))
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let pair = Self::build(&self.paths.0, &self.paths.1)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = pair;
        Ok(())
    }

    pub fn starttls(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    pub fn direct(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}
