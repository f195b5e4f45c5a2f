//! Incoming server-to-server streams: TLS first (STARTTLS required on the plain port), then
//! the peer proves its domain with SASL EXTERNAL (its certificate, valid for that domain as a
//! server certificate) or dialback, and every stanza's `from` must be a domain proven on this
//! stream (RFC 6120 §4.9.3.9 `invalid-from` otherwise).

use super::dialback::{self, Dialback};
use super::outgoing::{self, next_element, send};
use super::{header, rename_stream_ns, tls, S2s};
use crate::server::Server;
use crate::stanza::random_id;
use crate::xml::{ns, Element, XmlEvent, XmlReader};
use base64::Engine;
use rustls::pki_types::CertificateDer;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// What ends a stream: a stream error condition and a text for the peer's operator.
type Close = (&'static str, String);

pub(super) async fn serve(
    server: Arc<Server>,
    s2s: Arc<S2s>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
) {
    let _ = tcp.set_nodelay(true);
    let negotiation = Duration::from_secs(server.config.limits.negotiation_timeout_secs);
    let tls = match tokio::time::timeout(negotiation, secure(&server, tcp, direct_tls)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return log::info!("s2s {peer}: {e}"),
        Err(_) => return log::debug!("s2s {peer}: too slow to start TLS"),
    };
    let certs: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let (rd, wr) = tokio::io::split(tls);
    let reader = XmlReader::new(rd, crate::c2s::xml_limits(&server.config.limits));
    let mut stream = Incoming {
        server,
        s2s,
        peer,
        certs,
        writer: wr,
        proven: HashSet::new(),
        sasl_done: false,
        local: String::new(),
        id: String::new(),
    };
    stream.run(reader).await;
}

/// STARTTLS on the plain port (nothing else is offered there), or TLS from the first byte.
async fn secure(
    server: &Server,
    mut tcp: TcpStream,
    direct_tls: bool,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
    if !direct_tls {
        let (rd, mut wr) = tcp.split();
        let mut reader = XmlReader::new(rd, crate::c2s::xml_limits(&server.config.limits));
        let (local, from) = match reader.next().await {
            Ok(XmlEvent::StreamStart(h)) => match check_header(server, &h) {
                Ok(local) => (local, h.attr("from").map(str::to_string)),
                Err((cond, text)) => {
                    let opening = header(server.domain(), None, Some(&random_id(12)));
                    fail(&mut wr, Some(&opening), cond, &text).await;
                    return Err(text);
                }
            },
            _ => return Err("no stream header".into()),
        };
        let opening = header(&local, from.as_deref(), Some(&random_id(12)));
        let features = format!(
            "<stream:features><starttls xmlns='{}'><required/></starttls></stream:features>",
            ns::TLS
        );
        send(&mut wr, &format!("{opening}{features}")).await?;
        let el = next_element(&mut reader).await?;
        if !el.is("starttls", ns::TLS) {
            fail(
                &mut wr,
                None,
                "policy-violation",
                "STARTTLS is required first",
            )
            .await;
            return Err(format!("sent <{}/> before STARTTLS", el.name));
        }
        send(&mut wr, &format!("<proceed xmlns='{}'/>", ns::TLS)).await?;
    }
    let config = tls::server_config(&server.config.tls.cert, &server.config.tls.key, direct_tls)?;
    TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map_err(|e| format!("TLS failed: {e}"))
}

/// What a peer's stream header must say: the server namespace, one of our domains as `to`,
/// XMPP 1.0. Gives the local domain it asked for.
fn check_header(server: &Server, h: &Element) -> Result<String, Close> {
    if h.attr("xmlns") != Some(ns::SERVER) {
        return Err(("invalid-namespace", "this port speaks jabber:server".into()));
    }
    let to = h.attr("to").unwrap_or("");
    if !S2s::is_local(server, to) {
        return Err(("host-unknown", format!("this server does not serve {to:?}")));
    }
    if !h.attr("version").is_some_and(|v| v.starts_with('1')) {
        return Err(("unsupported-version", "XMPP 1.0 is required".into()));
    }
    Ok(to.to_ascii_lowercase())
}

async fn fail<W: AsyncWrite + Unpin>(w: &mut W, opening: Option<&str>, cond: &str, text: &str) {
    let mut out = opening.unwrap_or_default().to_string();
    out.push_str(&crate::c2s::stream::error(cond, Some(text)));
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = send(w, &out).await;
        let _ = w.shutdown().await;
    })
    .await;
}

/// What an element did to the stream.
enum Next {
    Continue,
    /// SASL succeeded: the peer opens a new stream.
    Restart,
}

struct Incoming<W> {
    server: Arc<Server>,
    s2s: Arc<S2s>,
    peer: SocketAddr,
    /// The peer's certificate chain, if it showed one.
    certs: Vec<CertificateDer<'static>>,
    writer: W,
    /// Remote domains proven on this stream (lowercase).
    proven: HashSet<String>,
    sasl_done: bool,
    /// Our domain the peer addressed, and the id we gave the stream.
    local: String,
    id: String,
}

impl<W: AsyncWrite + Unpin> Incoming<W> {
    async fn run<R: AsyncRead + Unpin>(&mut self, mut reader: XmlReader<R>) {
        let negotiation = Duration::from_secs(self.server.config.limits.negotiation_timeout_secs);
        let idle = Duration::from_secs(self.s2s.config.idle_timeout_secs);
        // Until a domain is proven, the stream lives within one negotiation deadline (a peer
        // that only asks db:verify questions is done in well under that).
        let started = tokio::time::Instant::now();
        loop {
            let h = match tokio::time::timeout(negotiation, reader.next()).await {
                Ok(Ok(XmlEvent::StreamStart(h))) => h,
                _ => return,
            };
            let opening = header(&self.local_or_own(), h.attr("from"), Some(&random_id(12)));
            match check_header(&self.server, &h) {
                Ok(local) => self.local = local,
                Err((cond, text)) => {
                    return fail(&mut self.writer, Some(&opening), cond, &text).await
                }
            }
            self.id = random_id(16);
            let opening = header(&self.local, h.attr("from"), Some(&self.id));
            let features = self.features(h.attr("from"));
            if send(&mut self.writer, &format!("{opening}{features}"))
                .await
                .is_err()
            {
                return;
            }
            let claimed = h.attr("from").map(str::to_ascii_lowercase);
            loop {
                let wait = if self.proven.is_empty() {
                    negotiation.saturating_sub(started.elapsed())
                } else {
                    idle
                };
                let ev = match tokio::time::timeout(wait, reader.next()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        let text = "no traffic for a while";
                        return fail(&mut self.writer, None, "connection-timeout", text).await;
                    }
                };
                let el = match ev {
                    Ok(XmlEvent::Stanza(el)) => el,
                    Ok(XmlEvent::StreamEnd) => {
                        let _ = send(&mut self.writer, "</stream:stream>").await;
                        let _ = self.writer.shutdown().await;
                        return;
                    }
                    Ok(XmlEvent::StreamStart(_)) => {
                        return fail(&mut self.writer, None, "not-well-formed", "a second header")
                            .await
                    }
                    Err(e) => {
                        if let Some(cond) = e.condition() {
                            fail(&mut self.writer, None, cond, &e.to_string()).await;
                        }
                        return;
                    }
                };
                match self.element(el, claimed.as_deref()).await {
                    Ok(Next::Continue) => {}
                    Ok(Next::Restart) => {
                        reader = reader.restart();
                        break;
                    }
                    Err((cond, text)) => {
                        log::info!("s2s {}: closing with {cond}: {text}", self.peer);
                        return fail(&mut self.writer, None, cond, &text).await;
                    }
                }
            }
        }
    }

    fn local_or_own(&self) -> String {
        if self.local.is_empty() {
            self.server.domain().to_string()
        } else {
            self.local.clone()
        }
    }

    /// Whether the peer's certificate proves `domain`.
    fn certificate_proves(&self, domain: &str) -> bool {
        match self.s2s.trust.valid_for(&self.certs, domain) {
            Ok(()) => true,
            Err(e) => {
                log::info!("s2s {}: certificate not valid for {domain}: {e}", self.peer);
                false
            }
        }
    }

    fn features(&self, from: Option<&str>) -> String {
        let mut f = Element::new("features", ns::STREAMS);
        let external = !self.sasl_done
            && from.is_some_and(|d| self.s2s.config.allows(d) && self.certificate_proves(d));
        if external {
            f.push_child(
                Element::new("mechanisms", ns::SASL)
                    .with_child(Element::new("mechanism", ns::SASL).with_text("EXTERNAL")),
            );
        }
        f.push_child(dialback::feature());
        let inner: String = f.elements().map(|e| e.to_xml(ns::SERVER)).collect();
        format!("<stream:features>{inner}</stream:features>")
    }

    async fn element(&mut self, el: Element, claimed: Option<&str>) -> Result<Next, Close> {
        if el.is("auth", ns::SASL) {
            return self.sasl_external(&el, claimed).await;
        }
        if let Some(db) = dialback::parse(&el) {
            let db = db.map_err(|e| ("bad-format", e.to_string()))?;
            self.dialback(db).await?;
            return Ok(Next::Continue);
        }
        let mut stanza = self.check_stanza(el)?;
        rename_stream_ns(&mut stanza, ns::SERVER, ns::CLIENT);
        Box::pin(crate::delivery::route(&self.server, stanza, None)).await;
        Ok(Next::Continue)
    }

    async fn sasl_external(
        &mut self,
        auth: &Element,
        claimed: Option<&str>,
    ) -> Result<Next, Close> {
        let failure = |cond: &str| format!("<failure xmlns='{}'><{cond}/></failure>", ns::SASL);
        if self.sasl_done || auth.attr("mechanism") != Some("EXTERNAL") {
            send(&mut self.writer, &failure("invalid-mechanism"))
                .await
                .map_err(io_close)?;
            return Ok(Next::Continue);
        }
        let text = auth.text();
        let text = text.trim();
        let authzid = if text.is_empty() || text == "=" {
            None
        } else {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| ("bad-format", "the SASL response is not base64".to_string()))?;
            Some(
                String::from_utf8(raw)
                    .map_err(|_| ("bad-format", "authzid is not UTF-8".to_string()))?,
            )
        };
        let Some(domain) = authzid
            .map(|a| a.to_ascii_lowercase())
            .or(claimed.map(str::to_string))
        else {
            send(&mut self.writer, &failure("not-authorized"))
                .await
                .map_err(io_close)?;
            return Ok(Next::Continue);
        };
        if !self.s2s.config.allows(&domain) {
            return Err((
                "policy-violation",
                format!("this server does not federate with {domain}"),
            ));
        }
        if claimed.is_some_and(|c| c != domain) || !self.certificate_proves(&domain) {
            send(&mut self.writer, &failure("not-authorized"))
                .await
                .map_err(io_close)?;
            return Ok(Next::Continue);
        }
        send(
            &mut self.writer,
            &format!("<success xmlns='{}'/>", ns::SASL),
        )
        .await
        .map_err(io_close)?;
        log::info!(
            "s2s {}: {domain} authenticated by certificate (SASL EXTERNAL)",
            self.peer
        );
        self.proven.insert(domain);
        self.sasl_done = true;
        Ok(Next::Restart)
    }

    async fn dialback(&mut self, db: Dialback) -> Result<(), Close> {
        match db {
            Dialback::ResultRequest { from, to, key } => {
                let (from, to) = (from.to_ascii_lowercase(), to.to_ascii_lowercase());
                if !S2s::is_local(&self.server, &to) {
                    return Err(("host-unknown", format!("this server does not serve {to}")));
                }
                if !self.s2s.config.allows(&from) {
                    return Err((
                        "policy-violation",
                        format!("this server does not federate with {from}"),
                    ));
                }
                let valid = self.ask_authoritative(&to, &from, &key).await;
                send(
                    &mut self.writer,
                    &dialback::result_answer(&to, &from, valid),
                )
                .await
                .map_err(io_close)?;
                if valid {
                    log::info!("s2s {}: {from} authenticated by dialback", self.peer);
                    self.proven.insert(from);
                }
                Ok(())
            }
            Dialback::VerifyRequest { from, to, id, key } => {
                // Is this the key we sent as `to` to `from` on the stream `id`?
                let ours = dialback::key(&self.s2s.secret, &from, &to, &id);
                let valid = S2s::is_local(&self.server, &to) && dialback::same_key(&ours, &key);
                send(
                    &mut self.writer,
                    &dialback::verify_answer(&to, &from, &id, valid),
                )
                .await
                .map_err(io_close)
            }
            Dialback::ResultAnswer { .. } | Dialback::VerifyAnswer { .. } => Ok(()),
        }
    }

    /// Asks `remote`'s authoritative server (found as for any outgoing stream, its certificate
    /// checked) whether `key` is its key for our stream.
    async fn ask_authoritative(&self, local: &str, remote: &str, key: &str) -> bool {
        let limit = Duration::from_secs(self.s2s.config.connect_timeout_secs);
        let id = self.id.clone();
        let asked = tokio::time::timeout(limit, async {
            let mut sec = outgoing::secure(&self.s2s, &self.server, local, remote).await?;
            send(
                &mut sec.writer,
                &dialback::verify_request(local, remote, &id, key),
            )
            .await?;
            let answer = loop {
                let el = next_element(&mut sec.reader).await?;
                if let Some(Ok(Dialback::VerifyAnswer { id: i, valid, .. })) = dialback::parse(&el)
                {
                    if i == id {
                        break valid;
                    }
                }
            };
            let _ = send(&mut sec.writer, "</stream:stream>").await;
            Ok::<bool, String>(answer)
        })
        .await;
        match asked {
            Ok(Ok(valid)) => valid,
            Ok(Err(e)) => {
                log::info!("s2s: cannot verify {remote}'s dialback key: {e}");
                false
            }
            Err(_) => {
                log::info!("s2s: {remote}'s authoritative server did not answer in time");
                false
            }
        }
    }

    /// A stanza from the peer: addressed from a domain proven here to one of ours.
    fn check_stanza(&self, el: Element) -> Result<Element, Close> {
        if el.ns != ns::SERVER || !matches!(el.name.as_str(), "message" | "presence" | "iq") {
            return Err((
                "unsupported-stanza-type",
                format!("<{}/> in {} is not understood here", el.name, el.ns),
            ));
        }
        if self.proven.is_empty() {
            return Err((
                "not-authorized",
                "authenticate first (SASL EXTERNAL or dialback)".into(),
            ));
        }
        let from = match crate::stanza::from_jid(&el) {
            Some(j) => j,
            None => {
                return Err((
                    "improper-addressing",
                    "a stanza without a valid from".into(),
                ))
            }
        };
        if !self.proven.contains(&from.domain.to_ascii_lowercase()) {
            return Err((
                "invalid-from",
                format!("{} is not authenticated on this stream", from.domain),
            ));
        }
        match crate::stanza::to_jid(&el) {
            Some(Ok(to)) if S2s::is_local(&self.server, &to.domain) => Ok(el),
            Some(Ok(to)) => Err((
                "host-unknown",
                format!("this server does not serve {}", to.domain),
            )),
            _ => Err(("improper-addressing", "a stanza without a valid to".into())),
        }
    }
}

fn io_close(e: String) -> Close {
    ("connection-timeout", e)
}
