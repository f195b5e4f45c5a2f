//! Stream negotiation, one phase after the other (RFC 6120 §5–7): STARTTLS (or direct TLS),
//! SASL, stream restart, resource binding. The whole negotiation runs under one deadline, so a
//! client that stalls or trickles bytes cannot hold a connection slot for long.

use super::sasl_exchange::{authenticate, AuthOutcome};
use super::session::{self, Bound, Link};
use super::{stream, xml_limits};
use crate::hooks::{Extensions, FeaturePhase, IqTarget};
use crate::jid::Jid;
use crate::modules::{PreAuthIq, Unbound};
use crate::server::Server;
use crate::stanza::random_id;
use crate::xml::{ns, Element, XmlEvent, XmlReader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a stream that ended in an error keeps swallowing input, so the peer reads the error.
pub(super) const LINGER: Duration = Duration::from_secs(2);

pub(super) type TlsRead = ReadHalf<TlsStream<TcpStream>>;

/// Serves one client connection from accept to close.
pub async fn serve(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let _ = tcp.set_nodelay(true);
    let deadline = Duration::from_secs(server.config.limits.negotiation_timeout_secs);
    // Boxed, and gone before the session starts: the negotiation's state machine is several
    // KiB, and an inline future would keep that space reserved in every idle session's task.
    let negotiated = tokio::time::timeout(
        deadline,
        Box::pin(negotiate(&server, tcp, peer, direct_tls)),
    )
    .await;
    match negotiated {
        Ok(Some(bound)) => session::run(server, bound).await,
        Ok(None) => {}
        Err(_) => log::debug!(
            "{peer}: negotiation took longer than {}s, closed",
            deadline.as_secs()
        ),
    }
}

async fn negotiate(
    server: &Arc<Server>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
) -> Option<Bound<TlsRead>> {
    let domain = server.domain().to_string();
    let tls = if direct_tls {
        TlsAcceptor::from(server.tls.direct())
            .accept(tcp)
            .await
            .map_err(|e| log::debug!("{peer}: TLS failed: {e}"))
            .ok()?
    } else {
        starttls(server, &mut tcp, &domain).await?;
        TlsAcceptor::from(server.tls.starttls())
            .accept(tcp)
            .await
            .map_err(|e| log::debug!("{peer}: TLS failed: {e}"))
            .ok()?
    };
    let cb_data = {
        let conn = tls.get_ref().1;
        if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
                .ok()
                .map(|b| b.to_vec())
        } else {
            None
        }
    };
    let (rd, mut wr) = tokio::io::split(tls);
    let mut reader = XmlReader::new(rd, xml_limits(&server.config.limits));

    // Before login: SASL, and in-band registration when the policy allows it.
    let id = random_id(12);
    open_stream(&mut reader, &mut wr, &domain, &id).await?;
    let mechanisms = crate::sasl::mechanisms(cb_data.is_some(), server.config.auth.allow_plain);
    let mut features = Element::new("features", ns::STREAMS);
    let mut mechs = Element::new("mechanisms", ns::SASL);
    for m in &mechanisms {
        mechs.push_child(Element::new("mechanism", ns::SASL).with_text(*m));
    }
    features.push_child(mechs);
    if cb_data.is_some() {
        // XEP-0440: which channel-binding types the -PLUS mechanisms accept.
        features.push_child(
            Element::new("sasl-channel-binding", ns::SASL_CB).with_child(
                Element::new("channel-binding", ns::SASL_CB).with_attr("type", "tls-exporter"),
            ),
        );
    }
    for f in server
        .modules
        .stream_features(server, FeaturePhase::BeforeAuth)
    {
        features.push_child(f);
    }
    send_features(&mut wr, &features).await?;
    let ip = peer.ip().to_string();
    // Module state for the rest of this negotiation (e.g. an invite token).
    let mut stream_state = Extensions::default();
    let mut failures = 0u32;
    let username = loop {
        let el = next_stanza(&mut reader, &mut wr).await?;
        if el.is("auth", ns::SASL) {
            match authenticate(
                server,
                &mut reader,
                &mut wr,
                &el,
                &mechanisms,
                cb_data.clone(),
                &ip,
            )
            .await?
            {
                AuthOutcome::Success(user) => break user,
                AuthOutcome::Failure => {
                    failures += 1;
                    if failures >= 5 {
                        stream::fail(
                            &mut wr,
                            None,
                            "policy-violation",
                            Some("too many failed logins"),
                        )
                        .await;
                        return None;
                    }
                }
            }
        } else if el.name == "iq" && el.ns == ns::CLIENT {
            let reply = preauth_iq(server, &el, &ip, &mut stream_state).await;
            stream::send(&mut wr, &reply.to_xml(ns::CLIENT))
                .await
                .ok()?;
        } else {
            stream::fail(&mut wr, None, "not-authorized", Some("log in first")).await;
            return None;
        }
    };

    // After login: a new stream, then resource binding (RFC 6120 §7).
    let mut reader = reader.restart();
    let id = random_id(12);
    open_stream(&mut reader, &mut wr, &domain, &id).await?;
    let mut features =
        Element::new("features", ns::STREAMS).with_child(Element::new("bind", ns::BIND));
    for f in server
        .modules
        .stream_features(server, FeaturePhase::AfterAuth)
    {
        features.push_child(f);
    }
    send_features(&mut wr, &features).await?;
    loop {
        let el = next_stanza(&mut reader, &mut wr).await?;
        let bind = (el.name == "iq" && el.attr("type") == Some("set"))
            .then(|| el.child("bind", ns::BIND))
            .flatten();
        let Some(bind) = bind else {
            if el.ns != ns::CLIENT {
                // A module's nonza before binding (stream resumption).
                let account = Jid::parse(&format!("{username}@{domain}")).ok()?;
                let module = server.modules.nonza_handler(&el.name, &el.ns).cloned();
                let answer = match module {
                    Some(m) => m.on_unbound_nonza(server, &account, &el).await,
                    None => None,
                };
                match answer {
                    Some(Unbound::Reply(reply)) => {
                        stream::send(&mut wr, &reply.to_xml(ns::CLIENT))
                            .await
                            .ok()?;
                        continue;
                    }
                    Some(Unbound::HandOver { to, if_gone }) => {
                        let link = Link::start(reader, Box::new(wr), peer, Some(el));
                        if let Err(refused) = to.send(link).await {
                            let mut wr = refused.into_writer();
                            let xml = format!("{}</stream:stream>", if_gone.to_xml(ns::CLIENT));
                            let _ = stream::send(&mut wr, &xml).await;
                        }
                        return None;
                    }
                    None => {}
                }
            }
            if el.name == "iq" && el.ns == ns::CLIENT && el.attr("type") == Some("get") {
                // Some clients ask for things before binding; tell them to wait for it.
                let err = crate::stanza::StanzaError::new("wait", "not-authorized")
                    .with_text("bind a resource first");
                if let Some(r) = crate::stanza::error_reply(&el, &err) {
                    stream::send(&mut wr, &r.to_xml(ns::CLIENT)).await.ok()?;
                }
                continue;
            }
            stream::fail(
                &mut wr,
                None,
                "not-authorized",
                Some("bind a resource first"),
            )
            .await;
            return None;
        };
        let requested = bind
            .child("resource", ns::BIND)
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty());
        let resource = requested.unwrap_or_else(|| format!("hearth-{}", random_id(6)));
        let jid = match Jid::parse(&format!("{username}@{domain}/{resource}")) {
            Ok(j) => j,
            Err(_) => {
                let err = crate::stanza::StanzaError::bad_request()
                    .with_text("that resource cannot be used");
                if let Some(r) = crate::stanza::error_reply(&el, &err) {
                    stream::send(&mut wr, &r.to_xml(ns::CLIENT)).await.ok()?;
                }
                continue;
            }
        };
        let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        if let Some(id) = el.attr("id") {
            reply.set_attr("id", id);
        }
        reply.push_child(
            Element::new("bind", ns::BIND)
                .with_child(Element::new("jid", ns::BIND).with_text(jid.to_string())),
        );
        stream::send(&mut wr, &reply.to_xml(ns::CLIENT))
            .await
            .ok()?;
        log::info!("{peer}: {jid} logged in");
        return Some(Bound {
            reader,
            writer: Box::new(wr),
            jid,
            peer,
        });
    }
}

/// An IQ before login: to the module routed for it (`IqTarget::BeforeLogin`), else refused.
async fn preauth_iq(
    server: &Arc<Server>,
    iq: &Element,
    ip: &str,
    stream_state: &mut Extensions,
) -> Element {
    let kind = iq.attr("type").unwrap_or("");
    let payload = iq.first_element().filter(|_| iq.elements().count() == 1);
    let module = payload.and_then(|p| {
        server
            .modules
            .iq_handler(kind, IqTarget::BeforeLogin, &p.ns)
            .cloned()
    });
    match (module, payload) {
        (Some(m), Some(payload)) => {
            m.handle_preauth_iq(PreAuthIq {
                server,
                iq,
                payload,
                ip,
                stream: stream_state,
            })
            .await
        }
        _ => {
            let err = if payload.is_none() {
                crate::stanza::StanzaError::bad_request()
            } else {
                crate::stanza::StanzaError::service_unavailable()
            };
            let mut reply = crate::stanza::error_reply(iq, &err)
                .unwrap_or_else(|| crate::stanza::iq_result(iq, None));
            reply.remove_attr("from");
            reply.remove_attr("to");
            reply
        }
    }
}

/// STARTTLS on a plain TCP connection: the only thing we offer there (RFC 6120 §5).
async fn starttls(server: &Server, tcp: &mut TcpStream, domain: &str) -> Option<()> {
    let (rd, mut wr) = tcp.split();
    let mut reader = XmlReader::new(rd, xml_limits(&server.config.limits));
    let id = random_id(12);
    open_stream(&mut reader, &mut wr, domain, &id).await?;
    let features = Element::new("features", ns::STREAMS).with_child(
        Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS)),
    );
    send_features(&mut wr, &features).await?;
    let el = next_stanza(&mut reader, &mut wr).await?;
    if !el.is("starttls", ns::TLS) {
        stream::fail(
            &mut wr,
            None,
            "policy-violation",
            Some("this server requires STARTTLS before anything else"),
        )
        .await;
        return None;
    }
    stream::send(&mut wr, &format!("<proceed xmlns='{}'/>", ns::TLS))
        .await
        .ok()
}

/// Reads the client's stream header and answers with ours (or with a stream error).
async fn open_stream<R, W>(
    reader: &mut XmlReader<R>,
    wr: &mut W,
    domain: &str,
    id: &str,
) -> Option<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match reader.next().await {
        Ok(XmlEvent::StreamStart(h)) => match stream::check_header(&h, domain) {
            Ok(()) => stream::send(wr, &stream::header(domain, id)).await.ok(),
            Err((cond, text)) => {
                stream::fail(wr, Some((domain, id)), cond, Some(&text)).await;
                reader.discard_input(LINGER).await;
                None
            }
        },
        Ok(_) => None,
        Err(e) => {
            if let Some(cond) = e.condition() {
                log::info!("stream closed with {cond} before login: {e}");
                stream::fail(wr, Some((domain, id)), cond, Some(&e.to_string())).await;
                reader.discard_input(LINGER).await;
            }
            None
        }
    }
}

async fn send_features<W: AsyncWrite + Unpin>(wr: &mut W, features: &Element) -> Option<()> {
    // Written with the stream prefix the header declared.
    let inner: String = features.elements().map(|e| e.to_xml(ns::CLIENT)).collect();
    stream::send(wr, &format!("<stream:features>{inner}</stream:features>"))
        .await
        .ok()
}

/// The next top-level element; stream errors and closes end the negotiation.
pub(super) async fn next_stanza<R, W>(reader: &mut XmlReader<R>, wr: &mut W) -> Option<Element>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match reader.next().await {
        Ok(XmlEvent::Stanza(e)) => Some(e),
        Ok(XmlEvent::StreamEnd) => {
            let _ = stream::send(wr, "</stream:stream>").await;
            None
        }
        Ok(XmlEvent::StreamStart(_)) => None,
        Err(e) => {
            if let Some(cond) = e.condition() {
                log::info!("stream closed with {cond} before login: {e}");
                stream::fail(wr, None, cond, Some(&e.to_string())).await;
                reader.discard_input(LINGER).await;
            }
            None
        }
    }
}
