//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), for people who run their own DNS server
//! (BIND, Knot, PowerDNS) or a provider that accepts them. A DNS UPDATE message is small enough to
//! build by hand, which keeps a DNS library out of the binary; it goes over TCP so that nothing is
//! lost or truncated.

use super::{relative_name, BoxFuture, DnsProvider, TxtRecord};
use ring::hmac;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_NONE: u16 = 254;
const CLASS_ANY: u16 = 255;
const OPCODE_UPDATE: u16 = 5 << 11;
/// Seconds of clock difference the server may accept (RFC 8945 recommends 300).
const FUDGE: u16 = 300;
/// Short, so a failed run does not leave a stale challenge cached for long.
const TTL: u32 = 60;
const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha512,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha512" => Some(Algorithm::HmacSha512),
            _ => None,
        }
    }
    fn wire_name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }
    fn ring(self) -> hmac::Algorithm {
        match self {
            Algorithm::HmacSha256 => hmac::HMAC_SHA256,
            Algorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

pub struct Rfc2136 {
    server: String,
    zone: String,
    key_name: String,
    alg: Algorithm,
    key: hmac::Key,
}

impl Rfc2136 {
    pub fn new(
        server: String,
        zone: String,
        key_name: String,
        alg: &str,
        secret_b64: &str,
    ) -> Result<Self, String> {
        use base64::Engine;
        let alg = Algorithm::parse(alg).ok_or_else(|| format!("unknown TSIG algorithm {alg:?}"))?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_b64.trim())
            .map_err(|_| "acme.dns.key_secret is not base64".to_string())?;
        let server = if server.parse::<std::net::IpAddr>().is_ok() || !server.contains(':') {
            format!("{server}:53")
        } else {
            server
        };
        Ok(Rfc2136 {
            server,
            zone,
            key_name: key_name.trim_end_matches('.').to_string(),
            alg,
            key: hmac::Key::new(alg.ring(), &secret),
        })
    }

    async fn update(&self, records: &[TxtRecord], add: bool) -> Result<(), String> {
        for r in records {
            relative_name(&r.fqdn, &self.zone, "the RFC 2136 server")?;
        }
        let id = (crate::state::random_u32() & 0xffff) as u16;
        let now = crate::state::now() as u64;
        let (msg, mac) = self.signed_update(id, records, add, now);
        let reply = tokio::time::timeout(TIMEOUT, exchange(&self.server, &msg))
            .await
            .map_err(|_| {
                format!(
                    "the DNS server {} did not answer the update within {}s",
                    self.server,
                    TIMEOUT.as_secs()
                )
            })??;
        check_reply(
            &reply,
            id,
            &mac,
            &self.key,
            &self.key_name,
            self.alg,
            &self.zone,
            &self.server,
        )
    }

    /// The UPDATE message and its MAC (needed to check the answer's signature).
    fn signed_update(
        &self,
        id: u16,
        records: &[TxtRecord],
        add: bool,
        now: u64,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut m = Vec::with_capacity(512);
        put16(&mut m, id);
        put16(&mut m, OPCODE_UPDATE);
        put16(&mut m, 1); // zone
        put16(&mut m, 0); // prerequisites
        let count_at = m.len();
        put16(&mut m, 0); // updates, filled in below
        put16(&mut m, 0); // additional (TSIG is added after signing)
        put_name(&mut m, &self.zone);
        put16(&mut m, TYPE_SOA);
        put16(&mut m, CLASS_IN);
        let mut updates = 0u16;
        for r in records {
            let txt = txt_rdata(&r.value);
            if add {
                // Delete the whole TXT set first, so values from an earlier failed run cannot linger.
                put_rr(&mut m, &r.fqdn, TYPE_TXT, CLASS_ANY, 0, &[]);
                put_rr(&mut m, &r.fqdn, TYPE_TXT, CLASS_IN, TTL, &txt);
                updates += 2;
            } else {
                put_rr(&mut m, &r.fqdn, TYPE_TXT, CLASS_NONE, 0, &txt);
                updates += 1;
            }
        }
        m[count_at..count_at + 2].copy_from_slice(&updates.to_be_bytes());
        let mut signed = m.clone();
        signed.extend(tsig_variables(&self.key_name, self.alg, now, 0, &[]));
        let mac = hmac::sign(&self.key, &signed).as_ref().to_vec();
        let rdata = tsig_rdata(self.alg, now, &mac, id, 0);
        put_rr(&mut m, &self.key_name, TYPE_TSIG, CLASS_ANY, 0, &rdata);
        m[10..12].copy_from_slice(&1u16.to_be_bytes());
        (m, mac)
    }
}

impl DnsProvider for Rfc2136 {
    fn name(&self) -> &'static str {
        "RFC 2136"
    }
    fn set_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.update(records, true))
    }
    fn clear_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.update(records, false))
    }
    fn default_propagation(&self) -> Duration {
        // The primary answers at once; secondaries get a NOTIFY and follow within seconds.
        Duration::from_secs(5)
    }
}

fn put16(m: &mut Vec<u8>, v: u16) {
    m.extend_from_slice(&v.to_be_bytes());
}

/// A name in uncompressed, lower-case wire form (the canonical form TSIG signs).
fn put_name(m: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let l = label.to_ascii_lowercase();
        m.push(l.len().min(63) as u8);
        m.extend_from_slice(&l.as_bytes()[..l.len().min(63)]);
    }
    m.push(0);
}

fn put_rr(m: &mut Vec<u8>, name: &str, rtype: u16, class: u16, ttl: u32, rdata: &[u8]) {
    put_name(m, name);
    put16(m, rtype);
    put16(m, class);
    m.extend_from_slice(&ttl.to_be_bytes());
    put16(m, rdata.len() as u16);
    m.extend_from_slice(rdata);
}

fn txt_rdata(value: &str) -> Vec<u8> {
    // ACME values are 43 characters, well under a character-string's 255.
    let v = &value.as_bytes()[..value.len().min(255)];
    let mut r = vec![v.len() as u8];
    r.extend_from_slice(v);
    r
}

fn put_time(m: &mut Vec<u8>, now: u64) {
    m.extend_from_slice(&now.to_be_bytes()[2..]);
}

/// RFC 8945 §4.3.3: what is signed after the message.
fn tsig_variables(key_name: &str, alg: Algorithm, now: u64, error: u16, other: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    put_name(&mut v, key_name);
    put16(&mut v, CLASS_ANY);
    v.extend_from_slice(&0u32.to_be_bytes());
    put_name(&mut v, alg.wire_name());
    put_time(&mut v, now);
    put16(&mut v, FUDGE);
    put16(&mut v, error);
    put16(&mut v, other.len() as u16);
    v.extend_from_slice(other);
    v
}

fn tsig_rdata(alg: Algorithm, now: u64, mac: &[u8], id: u16, error: u16) -> Vec<u8> {
    let mut r = Vec::new();
    put_name(&mut r, alg.wire_name());
    put_time(&mut r, now);
    put16(&mut r, FUDGE);
    put16(&mut r, mac.len() as u16);
    r.extend_from_slice(mac);
    put16(&mut r, id);
    put16(&mut r, error);
    put16(&mut r, 0);
    r
}

async fn exchange(server: &str, msg: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(server)
        .await
        .map_err(|e| format!("cannot reach the DNS server {server}: {e}"))?;
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    let io = async {
        s.write_all(&framed).await?;
        let len = s.read_u16().await? as usize;
        let mut buf = vec![0; len];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    io.await
        .map_err(|e| format!("the DNS server {server} closed the connection: {e}"))
}

/// A parsed TSIG record from an answer.
struct Tsig {
    start: usize,
    time: u64,
    mac: Vec<u8>,
    error: u16,
    other: Vec<u8>,
}

/// Skips a possibly compressed name, returning the offset after it.
fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *b.get(i)? as usize;
        match len {
            0 => return Some(i + 1),
            l if l & 0xc0 == 0xc0 => return Some(i + 2),
            l => i += 1 + l,
        }
    }
}

fn rd16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Finds the TSIG record (the last additional record) in an answer.
fn find_tsig(b: &[u8]) -> Option<Tsig> {
    let counts: Vec<usize> = (0..4)
        .map(|k| rd16(b, 4 + 2 * k).map(usize::from))
        .collect::<Option<_>>()?;
    if counts[3] == 0 {
        return None;
    }
    let mut i = 12;
    for _ in 0..counts[0] {
        i = skip_name(b, i)? + 4;
    }
    let rrs = counts[1] + counts[2] + counts[3];
    for n in 0..rrs {
        let start = i;
        i = skip_name(b, i)?;
        let rtype = rd16(b, i)?;
        let rdlen = usize::from(rd16(b, i + 8)?);
        let rdata = b.get(i + 10..i + 10 + rdlen)?;
        i += 10 + rdlen;
        if n + 1 == rrs && rtype == TYPE_TSIG {
            let j = skip_name(rdata, 0)?;
            let time = rdata
                .get(j..j + 6)?
                .iter()
                .fold(0u64, |t, &x| (t << 8) | u64::from(x));
            let mac_len = usize::from(rd16(rdata, j + 8)?);
            let mac = rdata.get(j + 10..j + 10 + mac_len)?.to_vec();
            let k = j + 10 + mac_len;
            let error = rd16(rdata, k + 2)?;
            let other_len = usize::from(rd16(rdata, k + 4)?);
            let other = rdata.get(k + 6..k + 6 + other_len)?.to_vec();
            return Some(Tsig {
                start,
                time,
                mac,
                error,
                other,
            });
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn check_reply(
    b: &[u8],
    id: u16,
    req_mac: &[u8],
    key: &hmac::Key,
    key_name: &str,
    alg: Algorithm,
    zone: &str,
    server: &str,
) -> Result<(), String> {
    if b.len() < 12 || rd16(b, 0) != Some(id) {
        return Err(format!(
            "the DNS server {server} sent an answer that does not match the update"
        ));
    }
    let rcode = rd16(b, 2).unwrap_or(0) & 0xf;
    let tsig = find_tsig(b);
    let tsig_error = tsig.as_ref().map_or(0, |t| t.error);
    let key_problem =
        "check acme.dns.key_name, key_secret and key_algorithm against the server's key";
    match (rcode, tsig_error) {
        (0, 0) => {}
        (_, 16) => return Err(format!("the DNS server {server} says the update's signature is wrong (BADSIG): {key_problem}")),
        (_, 17) => return Err(format!("the DNS server {server} does not know the key {key_name:?} (BADKEY): {key_problem}")),
        (_, 18) => return Err(format!("the DNS server {server} says our clock is off by more than {FUDGE}s (BADTIME): check the time on this box")),
        (5, _) => return Err(format!("the DNS server {server} refused the update (REFUSED): allow key {key_name:?} to update TXT records in {zone}")),
        (9, _) => return Err(format!("the DNS server {server} is not authoritative for {zone} or rejected our key (NOTAUTH): {key_problem}")),
        (10, _) => return Err(format!("the DNS server {server} says the names are not in zone {zone} (NOTZONE): set acme.dns.zone")),
        (2, _) => return Err(format!("the DNS server {server} failed to apply the update (SERVFAIL); see its log")),
        (c, e) => return Err(format!("the DNS server {server} rejected the update (rcode {c}, TSIG error {e})")),
    }
    // The server signs its answer with the same key; an unsigned or badly signed "success" may be
    // a spoofed packet, so it is not trusted.
    let t = tsig.ok_or_else(|| format!("the DNS server {server} answered without a TSIG signature; the update cannot be trusted"))?;
    let mut signed = Vec::new();
    put16(&mut signed, req_mac.len() as u16);
    signed.extend_from_slice(req_mac);
    let mut body = b[..t.start].to_vec();
    let ar = rd16(b, 10).unwrap_or(1).saturating_sub(1);
    body[10..12].copy_from_slice(&ar.to_be_bytes());
    signed.extend_from_slice(&body);
    signed.extend(tsig_variables(key_name, alg, t.time, t.error, &t.other));
    hmac::verify(key, &signed, &t.mac).map_err(|_| format!("the DNS server {server}'s answer has a wrong TSIG signature; the update cannot be trusted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Rfc2136 {
        Rfc2136::new(
            "127.0.0.1".into(),
            "example.test".into(),
            "hearth-key.".into(),
            "hmac-sha256",
            "c2VjcmV0c2VjcmV0c2VjcmV0",
        )
        .unwrap()
    }

    #[test]
    fn server_gets_port_53_unless_given() {
        assert_eq!(provider().server, "127.0.0.1:53");
        let p = Rfc2136::new(
            "ns.example.test:5353".into(),
            "z".into(),
            "k".into(),
            "hmac-sha512",
            "AAAA",
        )
        .unwrap();
        assert_eq!(p.server, "ns.example.test:5353");
    }

    #[test]
    fn update_message_has_zone_updates_and_a_verifiable_tsig() {
        let p = provider();
        let recs = [TxtRecord {
            fqdn: "_acme-challenge.example.test".into(),
            value: "abc".into(),
        }];
        let (msg, mac) = p.signed_update(0x1234, &recs, true, 1_700_000_000);
        assert_eq!(&msg[..4], &[0x12, 0x34, 0x28, 0x00], "id, opcode UPDATE");
        assert_eq!(rd16(&msg, 8), Some(2), "delete set + add");
        assert_eq!(rd16(&msg, 10), Some(1), "one TSIG");
        let t = find_tsig(&msg).expect("tsig present");
        assert_eq!(t.mac, mac);
        assert_eq!(t.time, 1_700_000_000);
        // Recompute the MAC over the message without the TSIG record, as a server does.
        let mut body = msg[..t.start].to_vec();
        body[10..12].copy_from_slice(&[0, 0]);
        body.extend(tsig_variables(
            "hearth-key",
            Algorithm::HmacSha256,
            t.time,
            0,
            &[],
        ));
        assert!(hmac::verify(&p.key, &body, &t.mac).is_ok());
    }

    #[test]
    fn error_codes_become_sentences() {
        let p = provider();
        let mut reply = vec![0x12, 0x34, 0xa8, 0x05, 0, 1, 0, 0, 0, 0, 0, 0];
        put_name(&mut reply, "example.test");
        put16(&mut reply, TYPE_SOA);
        put16(&mut reply, CLASS_IN);
        let e = check_reply(
            &reply,
            0x1234,
            &[],
            &p.key,
            "hearth-key",
            p.alg,
            "example.test",
            "ns",
        )
        .unwrap_err();
        assert!(e.contains("REFUSED") && e.contains("hearth-key"), "{e}");
        reply[3] = 0; // NOERROR but unsigned
        let e = check_reply(
            &reply,
            0x1234,
            &[],
            &p.key,
            "hearth-key",
            p.alg,
            "example.test",
            "ns",
        )
        .unwrap_err();
        assert!(e.contains("without a TSIG"), "{e}");
        let e = check_reply(
            &reply,
            0x9999,
            &[],
            &p.key,
            "hearth-key",
            p.alg,
            "example.test",
            "ns",
        )
        .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }
}
