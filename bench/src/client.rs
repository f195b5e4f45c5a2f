//! The load generator's XMPP client: STARTTLS, SCRAM-SHA-1, in-band registration, resource binding,
//! and what a phone turns on after binding (stream management, carbons, CSI). It speaks the same bytes
//! to hearthd, Prosody and ejabberd, so the three are measured with one client.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub const DOMAIN: &str = "bench.test";
pub const PASSWORD: &str = "bench-password";

/// How long one read may wait: a loaded server on a shared core can be slow, but not this slow.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub type Conn = TlsStream<TcpStream>;

/// What each session turns on after binding, as a phone would; a feature the server does not offer is
/// skipped and the report says what was on.
#[derive(Clone, Copy, Default, Debug, serde::Serialize, serde::Deserialize)]
pub struct Enable {
    pub sm: bool,
    pub carbons: bool,
    pub csi: bool,
}

/// The TLS client and the SCRAM cache every connection shares.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    pub port: u16,
    /// The server's domain: the stream's `to`, and the name its certificate must carry.
    domain: Arc<str>,
    /// SaltedPassword by (salt, iterations): a real client stores it after the first login instead of
    /// the password, so a re-login costs it a few HMACs, not 4,096+ PBKDF2 rounds. Without the cache
    /// the load generator, not the server, would bound logins per second.
    salted: Arc<Mutex<HashMap<(Vec<u8>, u32), [u8; 20]>>>,
}

impl Client {
    pub fn new(cert: &Path, port: u16) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        for c in certs.flatten() {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", cert.display()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
            port,
            domain: DOMAIN.into(),
            salted: Arc::default(),
        })
    }

    /// The same client for a server whose domain is not [`DOMAIN`] (the booted image's).
    pub fn with_domain(mut self, domain: &str) -> Client {
        self.domain = domain.into();
        self
    }

    /// TCP, stream header, `<starttls/>`, TLS handshake, and the stream header again; returns the
    /// TLS stream, its read buffer and the features offered inside TLS.
    async fn secure(&self) -> Result<(Conn, Vec<u8>, String), String> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Like real clients: no Nagle delay on small stanzas.
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        send(&mut tcp, &header(&self.domain)).await?;
        read_until(&mut tcp, &mut buf, "</stream:features>").await?;
        send(
            &mut tcp,
            "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        )
        .await?;
        let answer = read_until(&mut tcp, &mut buf, "/>").await?;
        if !answer.contains("<proceed") {
            return Err(format!("STARTTLS refused: {answer}"));
        }
        let mut c = self
            .tls
            .connect(
                ServerName::try_from(self.domain.to_string())
                    .map_err(|e| format!("domain {:?}: {e}", self.domain))?,
                tcp,
            )
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let mut buf = Vec::new();
        send(&mut c, &header(&self.domain)).await?;
        let features = read_until(&mut c, &mut buf, "</stream:features>").await?;
        Ok((c, buf, features))
    }

    /// Creates `user` by in-band registration (XEP-0077) and closes the stream.
    pub async fn register(&self, user: &str) -> Result<(), String> {
        let (mut c, mut buf, _) = self.secure().await?;
        send(&mut c, &format!(
            "<iq type='set' id='bench-reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{PASSWORD}</password></query></iq>"
        ))
        .await?;
        let answer = read_iq(&mut c, &mut buf, "bench-reg").await?;
        let _ = c.write_all(b"</stream:stream>").await;
        if is_error(&answer) {
            let more = read_until(&mut c, &mut buf, "</iq>")
                .await
                .unwrap_or_default();
            if more.contains("conflict") {
                return Ok(()); // made by an earlier, interrupted run
            }
            return Err(format!("registering {user} refused: {answer}{more}"));
        }
        Ok(())
    }

    /// Logs in as `user` with SCRAM-SHA-1, binds, turns on what `enable` asks for and the server
    /// offers, and sends initial presence.
    pub async fn login(&self, user: &str, enable: Enable) -> Result<(Conn, Enable), String> {
        let t = std::time::Instant::now();
        let (mut c, mut buf, features) = self.secure().await?;
        trace(user, "TLS", t);
        if !features.contains("SCRAM-SHA-1<") {
            return Err(format!("SCRAM-SHA-1 not offered: {features}"));
        }
        self.scram(&mut c, &mut buf, user).await?;
        trace(user, "SCRAM", t);
        send(&mut c, &header(&self.domain)).await?;
        let features = read_until(&mut c, &mut buf, "</stream:features>").await?;
        send(&mut c, "<iq type='set' id='bench-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>").await?;
        read_until(&mut c, &mut buf, "</iq>").await?;
        trace(user, "bind", t);
        let offered = |ns: &str| {
            features.contains(&format!("xmlns='{ns}'"))
                || features.contains(&format!("xmlns=\"{ns}\""))
        };
        let mut got = Enable::default();
        // Counted stanzas since <enabled/>, to acknowledge them like a client (XEP-0198 `<a h=…/>`).
        let mut since_enabled = String::new();
        if enable.sm && offered("urn:xmpp:sm:3") {
            send(&mut c, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>").await?;
            let answer = read_until(&mut c, &mut buf, "/>").await?;
            if !answer.contains("<enabled") {
                return Err(format!("stream management not enabled: {answer}"));
            }
            got.sm = true;
            trace(user, "SM", t);
        }
        if enable.carbons {
            send(
                &mut c,
                "<iq type='set' id='bench-carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
            )
            .await?;
            let answer = read_iq(&mut c, &mut buf, "bench-carbons").await?;
            since_enabled.push_str(&answer);
            got.carbons = !is_error(&answer);
            trace(user, "carbons", t);
        }
        if enable.csi && offered("urn:xmpp:csi:0") {
            send(&mut c, "<inactive xmlns='urn:xmpp:csi:0'/>").await?;
            got.csi = true;
        }
        send(&mut c, "<presence/>").await?;
        if got.sm {
            // After a ping's answer everything sent before it has arrived (our own presence may be
            // held back by CSI, and some servers send none to a resource alone): count and ack.
            send(
                &mut c,
                "<iq type='get' id='bench-ping'><ping xmlns='urn:xmpp:ping'/></iq>",
            )
            .await?;
            since_enabled.push_str(&read_iq(&mut c, &mut buf, "bench-ping").await?);
            since_enabled.push_str(&String::from_utf8_lossy(&buf));
            buf.clear();
            let h: usize = ["<iq ", "<presence", "<message"]
                .iter()
                .map(|tag| since_enabled.matches(tag).count())
                .sum();
            send(&mut c, &format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>")).await?;
            trace(user, "ping answered, acked", t);
        }
        Ok((c, got))
    }

    /// SCRAM-SHA-1 without channel binding (RFC 5802), the mechanism all three servers offer.
    async fn scram(&self, c: &mut Conn, buf: &mut Vec<u8>, user: &str) -> Result<(), String> {
        let mut raw = [0u8; 18];
        getrandom::getrandom(&mut raw).map_err(|e| e.to_string())?;
        let cnonce = B64.encode(raw);
        let first_bare = format!("n={user},r={cnonce}");
        send(
            c,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
                B64.encode(format!("n,,{first_bare}"))
            ),
        )
        .await?;
        let challenge = read_until(c, buf, "</challenge>").await?;
        let server_first = decode_element(&challenge, "</challenge>")?;
        let field = |k: &str| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(k))
                .map(str::to_string)
        };
        let (Some(nonce), Some(salt), Some(iters)) = (field("r="), field("s="), field("i=")) else {
            return Err(format!("bad SCRAM challenge: {server_first}"));
        };
        if !nonce.starts_with(&cnonce) {
            return Err("SCRAM: server nonce does not extend ours".into());
        }
        let salt = B64.decode(salt).map_err(|e| format!("SCRAM salt: {e}"))?;
        let iters: u32 = iters.parse().map_err(|e| format!("SCRAM i: {e}"))?;
        let salted = self.salted_password(salt, iters);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 20] = Sha1::digest(client_key).into();
        let final_bare = format!("c=biws,r={nonce}");
        let auth_message = format!("{first_bare},{server_first},{final_bare}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        send(
            c,
            &format!(
                "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                B64.encode(format!("{final_bare},p={}", B64.encode(proof)))
            ),
        )
        .await?;
        let answer = read_until_any(c, buf, &["</success>", "<success/>", "</failure>"]).await?;
        if !answer.contains("<success") {
            return Err(format!("SCRAM login of {user} failed: {answer}"));
        }
        Ok(())
    }

    fn salted_password(&self, salt: Vec<u8>, iters: u32) -> [u8; 20] {
        let key = (salt, iters);
        if let Some(s) = self.salted.lock().expect("cache").get(&key) {
            return *s;
        }
        let mut out = [0u8; 20];
        pbkdf2::pbkdf2_hmac::<Sha1>(PASSWORD.as_bytes(), &key.0, iters, &mut out);
        self.salted.lock().expect("cache").insert(key, out);
        out
    }
}

/// With HEARTH_BENCH_TRACE=1, each login step's time goes to stderr (to find where a server waits).
fn trace(user: &str, step: &str, since: std::time::Instant) {
    if std::env::var_os("HEARTH_BENCH_TRACE").is_some() {
        eprintln!(
            "{user}: {step} after {:.1} ms",
            since.elapsed().as_secs_f64() * 1000.0
        );
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut m = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn header(domain: &str) -> String {
    format!("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>")
}

/// The base64 text of the element that ends with `end`, decoded.
fn decode_element(seen: &str, end: &str) -> Result<String, String> {
    let body = seen.strip_suffix(end).unwrap_or(seen);
    let text = body.rsplit('>').next().unwrap_or("");
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("base64 in {seen}: {e}"))?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

fn is_error(iq: &str) -> bool {
    iq.contains("type='error'") || iq.contains("type=\"error\"")
}

pub async fn send<S: AsyncWrite + Unpin>(c: &mut S, text: &str) -> Result<(), String> {
    c.write_all(text.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Reads the opening tag of the IQ with `id` (attributes in either order and quote style).
async fn read_iq<S: AsyncRead + Unpin>(
    c: &mut S,
    buf: &mut Vec<u8>,
    id: &str,
) -> Result<String, String> {
    let mut seen =
        read_until_any(c, buf, &[&format!("id='{id}'"), &format!("id=\"{id}\"")]).await?;
    seen.push_str(&read_until(c, buf, ">").await?);
    let start = seen.rfind("<iq").unwrap_or(0);
    Ok(seen[start..].to_string())
}

pub async fn read_until<S: AsyncRead + Unpin>(
    c: &mut S,
    buf: &mut Vec<u8>,
    needle: &str,
) -> Result<String, String> {
    read_until_any(c, buf, &[needle]).await
}

/// Reads until the first of `needles`; returns the text up to and including it.
pub async fn read_until_any<S: AsyncRead + Unpin>(
    c: &mut S,
    buf: &mut Vec<u8>,
    needles: &[&str],
) -> Result<String, String> {
    let mut chunk = [0u8; 4096];
    loop {
        let hit = needles
            .iter()
            .filter_map(|n| find(buf, n.as_bytes()).map(|i| i + n.len()))
            .min();
        if let Some(end) = hit {
            let seen: Vec<u8> = buf.drain(..end).collect();
            return Ok(String::from_utf8_lossy(&seen).into_owned());
        }
        let n = tokio::time::timeout(READ_TIMEOUT, c.read(&mut chunk))
            .await
            .map_err(|_| format!("timeout waiting for {needles:?}"))?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            let got = String::from_utf8_lossy(buf);
            return Err(format!(
                "closed while waiting for {needles:?} (after {got:.300})"
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_proof_matches_rfc5802_example() {
        // RFC 5802 section 5: user "user", password "pencil".
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let mut salted = [0u8; 20];
        pbkdf2::pbkdf2_hmac::<Sha1>(b"pencil", &salt, 4096, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 20] = Sha1::digest(client_key).into();
        let auth = "n=user,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        let sig = hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        assert_eq!(B64.encode(proof), "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
    }

    #[test]
    fn challenge_text_is_decoded() {
        let seen = format!(
            "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
            B64.encode("r=abc,s=c2FsdA==,i=4096")
        );
        assert_eq!(
            decode_element(&seen, "</challenge>").unwrap(),
            "r=abc,s=c2FsdA==,i=4096"
        );
    }
}
