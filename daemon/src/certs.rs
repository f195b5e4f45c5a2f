//! Certificates the box makes for itself: the self-signed pair for LAN-only mode, `hearthd --dev`
//! and tests. Trusted certificates come from `hearth-acme`.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

/// A PEM certificate and its PEM (PKCS#8) private key.
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes a self-signed ECDSA P-256 certificate for `names` (the first is the common name),
/// valid for ten years: a LAN-only box has nobody to renew it.
pub fn self_signed(names: &[String]) -> Result<PemPair, rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    dn.push(DnType::OrganizationName, "Hearth");
    params.distinguished_name = dn;
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn makes_a_pem_pair() {
        let p = super::self_signed(&["example.test".into(), "groups.example.test".into()]).unwrap();
        assert!(p.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(p.key_pem.contains("PRIVATE KEY"));
    }
}
