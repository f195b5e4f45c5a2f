//! What the certificate page shows: names, expiry, and who issued it. A small DER walk over the
//! leaf certificate (RFC 5280 §4.1) instead of a full X.509 crate: we only read, and only these fields.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub self_signed: bool,
    pub issuer: String,
}

pub fn read(path: &Path) -> Result<CertInfo, String> {
    let der = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))?
        .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))?;
    parse(&der).ok_or_else(|| {
        format!(
            "{} holds a certificate this page cannot read",
            path.display()
        )
    })
}

/// One DER element: (tag, content, rest).
fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, d) = d.split_first()?;
    let (&first, mut d) = d.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || d.len() < n {
            return None;
        }
        let len = d[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        d = &d[n..];
        len
    };
    (d.len() >= len).then(|| (tag, &d[..len], &d[len..]))
}

pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    let (_, _, r) = tlv(rest)?; // serial
    let (_, _, r) = tlv(r)?; // signature algorithm
    let (_, issuer, r) = tlv(r)?;
    let (_, validity, r) = tlv(r)?;
    let (_, subject, r) = tlv(r)?;
    let (_, _, mut r) = tlv(r)?; // public key
    let (t1, nb, vr) = tlv(validity)?;
    let (t2, na, _) = tlv(vr)?;
    let mut names = Vec::new();
    while let Some((tag, content, next)) = tlv(r) {
        if tag == 0xa3 {
            names = san_names(content).unwrap_or_default();
        }
        r = next;
    }
    Some(CertInfo {
        names,
        not_before: time(t1, nb)?,
        not_after: time(t2, na)?,
        self_signed: issuer == subject,
        issuer: common_name(issuer).unwrap_or_else(|| "unknown".into()),
    })
}

/// The dNSName entries of the subjectAltName extension (OID 2.5.29.17).
fn san_names(exts: &[u8]) -> Option<Vec<String>> {
    const SAN: &[u8] = &[0x55, 0x1d, 0x11];
    let (_, mut list, _) = tlv(exts)?;
    while let Some((_, ext, next)) = tlv(list) {
        let (_, oid, mut r) = tlv(ext)?;
        if oid == SAN {
            let (tag, _, after) = tlv(r)?;
            if tag == 0x01 {
                r = after; // critical flag
            }
            let (_, octets, _) = tlv(r)?;
            let (_, mut names, _) = tlv(octets)?;
            let mut out = Vec::new();
            while let Some((tag, v, n)) = tlv(names) {
                if tag == 0x82 {
                    out.push(String::from_utf8_lossy(v).into_owned());
                }
                names = n;
            }
            return Some(out);
        }
        list = next;
    }
    Some(Vec::new())
}

/// The CN (OID 2.5.4.3), else the O (2.5.4.10), of a Name.
fn common_name(name: &[u8]) -> Option<String> {
    let mut found = None;
    let mut sets = name;
    while let Some((_, set, next)) = tlv(sets) {
        let (_, atv, _) = tlv(set)?;
        let (_, oid, r) = tlv(atv)?;
        let (_, value, _) = tlv(r)?;
        let v = String::from_utf8_lossy(value).into_owned();
        match oid {
            [0x55, 0x04, 0x03] => return Some(v),
            [0x55, 0x04, 0x0a] => found = Some(v),
            _ => {}
        }
        sets = next;
    }
    found
}

/// UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ) as Unix seconds.
fn time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (mo, d, h, mi, se) = (num(0)?, num(2)?, num(4)?, num(6)?, num(8)?);
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-05-01` for a Unix time.
pub fn date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_self_signed_certificate() {
        let p = hearthd::certs::self_signed(&[
            "chat.example.test".into(),
            "groups.example.test".into(),
        ])
        .unwrap();
        let der = CertificateDer::from_pem_slice(p.cert_pem.as_bytes()).unwrap();
        let info = parse(&der).unwrap();
        assert_eq!(info.names, vec!["chat.example.test", "groups.example.test"]);
        assert!(info.self_signed);
        assert_eq!(info.issuer, "chat.example.test");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            info.not_before < now && info.not_after > now + 9 * 365 * 86_400,
            "{info:?}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(time(0x17, b"000229000000Z"), Some(951_782_400));
        assert_eq!(time(0x18, b"20000229000000Z"), Some(951_782_400));
    }
}
