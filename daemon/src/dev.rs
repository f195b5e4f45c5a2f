//! `hearthd --dev`: try Hearth in one command. Domain `localhost`, a self-signed certificate in
//! a local data directory, open registration, loopback ports.

use crate::config::{Config, RegistrationPolicy};
use std::path::Path;

/// Builds (and on first use, prepares) the development configuration under `dir`.
pub fn prepare(dir: &Path, port: u16) -> Result<Config, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !cert.exists() || !key.exists() {
        let pair = crate::certs::self_signed(&["localhost".to_string()])
            .map_err(|e| format!("cannot make a certificate: {e}"))?;
        crate::fsutil::write_atomically(&cert, pair.cert_pem.as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
        crate::fsutil::write_atomically(&key, pair.key_pem.as_bytes(), 0o600)
            .map_err(|e| e.to_string())?;
    }
    let text = format!(
        "domain = \"localhost\"\ndata_dir = {:?}\ncontrol_socket = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\n\
         [listen]\nc2s = [\"127.0.0.1:{port}\"]\nc2s_direct_tls = [\"127.0.0.1:{}\"]\n\
         [registration]\npolicy = \"open\"\nopen_per_ip_per_hour = 100\n\
         [s2s]\nenabled = false\n",
        dir,
        dir.join("control.sock"),
        cert,
        key,
        port.saturating_add(1),
    );
    let config = Config::parse(&text, "dev config").map_err(|e| e.to_string())?;
    debug_assert_eq!(config.registration.policy, RegistrationPolicy::Open);
    Ok(config)
}

pub fn banner(config: &Config) -> String {
    let port = |l: &[std::net::SocketAddr]| l.first().map(|a| a.port()).unwrap_or(0);
    format!(
        "Hearth development server for domain \"localhost\"\n\
         data: {}\n\
         Connect a client to 127.0.0.1 port {} (STARTTLS) or {} (direct TLS),\n\
         register any account, e.g. alice@localhost, and accept the self-signed certificate.\n\
         Or add one here: hearthctl --config {}/hearth.toml user add alice@localhost\n",
        config.data_dir.display(),
        port(&config.listen.c2s),
        port(&config.listen.c2s_direct_tls),
        config.data_dir.display()
    )
}
