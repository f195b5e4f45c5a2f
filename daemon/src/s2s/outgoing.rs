//! Outgoing server-to-server streams: find the remote server, connect, TLS (its certificate
//! must be valid for the remote domain), authenticate as our domain (SASL EXTERNAL with our
//! certificate when offered, else dialback), then send what the queue brings until idle.

use super::dialback::{self, Dialback};
use super::{header, rename_stream_ns, resolve, S2s};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::{ns, Element, XmlEvent, XmlReader};
use base64::Engine;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long one TCP connect may take before the next address is tried.
const TCP_CONNECT: Duration = Duration::from_secs(8);
/// Stanzas written per wake-up.
const WRITE_BATCH: usize = 32;

pub(super) type Reader = XmlReader<ReadHalf<TlsStream<TcpStream>>>;
pub(super) type Writer = WriteHalf<TlsStream<TcpStream>>;

/// An encrypted stream to a remote server whose certificate is valid for its domain, opened
/// but not yet authenticated.
pub(super) struct Secured {
    pub reader: Reader,
    pub writer: Writer,
    /// The remote's stream header (its id, its namespace declarations).
    pub header: Element,
    pub features: Element,
}

/// Finds `remote`'s server and opens a secured stream from `local` to it.
pub(super) async fn secure(
    s2s: &S2s,
    server: &Server,
    local: &str,
    remote: &str,
) -> Result<Secured, String> {
    let targets = match s2s.routes.get(remote) {
        Some(t) => vec![t.clone()],
        None => resolve::targets(&s2s.resolver, remote).await,
    };
    let mut last = format!("no address found for {remote}");
    for t in targets {
        for addr in resolve::addresses(&s2s.resolver, &t).await {
            match tokio::time::timeout(TCP_CONNECT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => match start(s2s, server, local, remote, tcp, t.direct_tls).await {
                    Ok(s) => {
                        let how = if t.direct_tls {
                            "direct TLS"
                        } else {
                            "STARTTLS"
                        };
                        log::info!("s2s: {local} → {remote}: secured with {addr} ({how})");
                        return Ok(s);
                    }
                    Err(e) => last = format!("{addr}: {e}"),
                },
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: no answer"),
            }
        }
    }
    Err(last)
}

async fn start(
    s2s: &S2s,
    server: &Server,
    local: &str,
    remote: &str,
    mut tcp: TcpStream,
    direct_tls: bool,
) -> Result<Secured, String> {
    let _ = tcp.set_nodelay(true);
    let limits = crate::c2s::xml_limits(&server.config.limits);
    if !direct_tls {
        let (rd, mut wr) = tcp.split();
        let mut reader = XmlReader::new(rd, limits);
        send(&mut wr, &header(local, Some(remote), None)).await?;
        let (_, features) = header_and_features(&mut reader).await?;
        if features.child("starttls", ns::TLS).is_none() {
            return Err("the server does not offer STARTTLS".into());
        }
        send(&mut wr, &format!("<starttls xmlns='{}'/>", ns::TLS)).await?;
        let answer = next_element(&mut reader).await?;
        if !answer.is("proceed", ns::TLS) {
            return Err("the server refused STARTTLS".into());
        }
    }
    let config =
        s2s.trust
            .client_config(&server.config.tls.cert, &server.config.tls.key, direct_tls)?;
    let name = ServerName::try_from(remote.to_string()).map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (rd, mut writer) = tokio::io::split(tls);
    let mut reader = XmlReader::new(rd, limits);
    send(&mut writer, &header(local, Some(remote), None)).await?;
    let (header, features) = header_and_features(&mut reader).await?;
    Ok(Secured {
        reader,
        writer,
        header,
        features,
    })
}

/// Authenticates `local` on a secured stream: SASL EXTERNAL if offered (our certificate),
/// else (or if refused) dialback.
pub(super) async fn authenticate(
    s2s: &S2s,
    local: &str,
    remote: &str,
    mut sec: Secured,
) -> Result<Secured, String> {
    let external = sec
        .features
        .child("mechanisms", ns::SASL)
        .is_some_and(|m| m.elements().any(|x| x.text().trim() == "EXTERNAL"));
    if external {
        let authzid = base64::engine::general_purpose::STANDARD.encode(local);
        let auth = format!(
            "<auth xmlns='{}' mechanism='EXTERNAL'>{authzid}</auth>",
            ns::SASL
        );
        send(&mut sec.writer, &auth).await?;
        let answer = next_element(&mut sec.reader).await?;
        if answer.is("success", ns::SASL) {
            let mut reader = sec.reader.restart();
            send(&mut sec.writer, &header(local, Some(remote), None)).await?;
            let (header, features) = header_and_features(&mut reader).await?;
            log::info!(
                "s2s: {local} → {remote} authenticated with our certificate (SASL EXTERNAL)"
            );
            return Ok(Secured {
                reader,
                writer: sec.writer,
                header,
                features,
            });
        }
        log::info!("s2s: {remote} did not accept our certificate; trying dialback");
    }
    if !dialback::offered(&sec.header, &sec.features) {
        return Err(
            "the server offers neither SASL EXTERNAL for our certificate nor dialback".into(),
        );
    }
    let id = sec
        .header
        .attr("id")
        .ok_or("the server's stream header has no id")?
        .to_string();
    let key = dialback::key(&s2s.secret, remote, local, &id);
    send(
        &mut sec.writer,
        &dialback::result_request(local, remote, &key),
    )
    .await?;
    loop {
        let el = next_element(&mut sec.reader).await?;
        match dialback::parse(&el) {
            Some(Ok(Dialback::ResultAnswer { valid: true, .. })) => {
                log::info!("s2s: {local} → {remote} authenticated by dialback");
                return Ok(sec);
            }
            Some(Ok(Dialback::ResultAnswer { valid: false, .. })) => {
                return Err("the server refused our dialback key".into())
            }
            _ => log::debug!(
                "s2s: {remote} sent <{}/> while we waited for dialback",
                el.name
            ),
        }
    }
}

/// One outgoing link: connects, then sends the queue's stanzas until the link is idle, the
/// remote closes, or the server shuts down. What cannot be sent bounces to its sender.
pub(super) async fn run(
    s2s: Arc<S2s>,
    server: Arc<Server>,
    pair: (String, String),
    id: u64,
    mut rx: mpsc::Receiver<Element>,
) {
    let (local, remote) = (pair.0.as_str(), pair.1.as_str());
    let limit = Duration::from_secs(s2s.config.connect_timeout_secs);
    let attempt = tokio::time::timeout(limit, async {
        let sec = secure(&s2s, &server, local, remote).await?;
        authenticate(&s2s, local, remote, sec).await
    })
    .await;
    let sec = match attempt {
        Ok(Ok(sec)) => sec,
        Ok(Err(e)) => {
            log::warn!("s2s: cannot reach {remote}: {e}");
            let err = StanzaError::new("cancel", "remote-server-not-found")
                .with_text(format!("cannot reach {remote}: {e}"));
            return give_up(&s2s, &server, &pair, id, rx, Vec::new(), err);
        }
        Err(_) => {
            log::warn!("s2s: {remote} not reached within {}s", limit.as_secs());
            let err = StanzaError::new("wait", "remote-server-timeout")
                .with_text(format!("{remote} did not answer in time"));
            return give_up(&s2s, &server, &pair, id, rx, Vec::new(), err);
        }
    };
    let Secured {
        reader, mut writer, ..
    } = sec;
    let (ev_tx, mut events) = mpsc::channel(4);
    // One reading task, never cancelled mid-token; the remote should send nothing but
    // answers, errors and the end of the stream on this one-way stream.
    let reader_task = tokio::spawn(async move {
        let mut reader = reader;
        loop {
            let ev = reader.next().await;
            let more = matches!(ev, Ok(XmlEvent::Stanza(_)));
            if ev_tx.send(ev).await.is_err() || !more {
                break;
            }
        }
    });
    let idle = Duration::from_secs(s2s.config.idle_timeout_secs);
    let mut shutdown = server.shutdown_signal();
    let mut buf = String::new();
    let mut failed: Vec<Element> = Vec::new();
    loop {
        tokio::select! {
            s = rx.recv() => {
                let Some(first) = s else { break };
                let mut batch = vec![first];
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(s) => batch.push(s),
                        Err(_) => break,
                    }
                }
                if let Err(e) = write_batch(&mut writer, &mut buf, &batch).await {
                    log::info!("s2s: link to {remote} broke: {e}");
                    failed = batch;
                    break;
                }
            }
            ev = events.recv() => match ev {
                Some(Ok(XmlEvent::Stanza(el))) => {
                    log::debug!("s2s: {remote} sent <{}/> on our outgoing stream", el.name);
                }
                Some(Ok(XmlEvent::StreamEnd)) | None => {
                    log::info!("s2s: {remote} closed the stream");
                    break;
                }
                Some(Ok(XmlEvent::StreamStart(_))) => break,
                Some(Err(e)) => {
                    log::info!("s2s: stream to {remote} ended: {e}");
                    break;
                }
            },
            _ = tokio::time::sleep(idle) => {
                log::debug!("s2s: link to {remote} idle, closing");
                break;
            }
            _ = shutdown.changed() => break,
        }
    }
    // No new stanzas can reach this link from here; what is still queued goes now or bounces.
    s2s.forget(&pair, id);
    rx.close();
    let mut rest = Vec::new();
    while let Ok(s) = rx.try_recv() {
        rest.push(s);
    }
    if failed.is_empty()
        && !rest.is_empty()
        && write_batch(&mut writer, &mut buf, &rest).await.is_ok()
    {
        rest.clear();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = writer.write_all(b"</stream:stream>").await;
        let _ = writer.shutdown().await;
    })
    .await;
    reader_task.abort();
    failed.extend(rest);
    if !failed.is_empty() {
        let err = StanzaError::new("wait", "remote-server-timeout")
            .with_text(format!("the connection to {remote} was lost"));
        give_up(&s2s, &server, &pair, id, rx, failed, err);
    }
}

/// Bounces what waited for a link that will not come (or broke), and lets a later stanza
/// try again with a new link.
fn give_up(
    s2s: &S2s,
    server: &Arc<Server>,
    pair: &(String, String),
    id: u64,
    mut rx: mpsc::Receiver<Element>,
    mut pending: Vec<Element>,
    err: StanzaError,
) {
    s2s.forget(pair, id);
    rx.close();
    while let Ok(s) = rx.try_recv() {
        pending.push(s);
    }
    for s in pending {
        crate::delivery::bounce(server, &s, err.clone());
    }
}

async fn write_batch(
    writer: &mut Writer,
    buf: &mut String,
    batch: &[Element],
) -> std::io::Result<()> {
    buf.clear();
    for s in batch {
        let mut s = s.clone();
        rename_stream_ns(&mut s, ns::CLIENT, ns::SERVER);
        s.write_to(buf, ns::SERVER);
    }
    writer.write_all(buf.as_bytes()).await?;
    writer.flush().await?;
    if buf.capacity() > 16 * 1024 {
        *buf = String::new();
    }
    Ok(())
}

pub(super) async fn send<W: AsyncWrite + Unpin>(w: &mut W, data: &str) -> Result<(), String> {
    w.write_all(data.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())
}

/// The next element; the end of the stream or an error is an `Err` naming it.
pub(super) async fn next_element<R: AsyncRead + Unpin>(
    reader: &mut XmlReader<R>,
) -> Result<Element, String> {
    match reader.next().await {
        Ok(XmlEvent::Stanza(el)) if el.is("error", ns::STREAMS) => Err(format!(
            "stream error: {}",
            el.first_element().map(|c| c.name.as_str()).unwrap_or("?")
        )),
        Ok(XmlEvent::Stanza(el)) => Ok(el),
        Ok(XmlEvent::StreamEnd) => Err("the server closed the stream".into()),
        Ok(XmlEvent::StreamStart(_)) => Err("an unexpected stream header".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn header_and_features<R: AsyncRead + Unpin>(
    reader: &mut XmlReader<R>,
) -> Result<(Element, Element), String> {
    let header = match reader.next().await {
        Ok(XmlEvent::StreamStart(h)) => h,
        Ok(_) => return Err("no stream header".into()),
        Err(e) => return Err(e.to_string()),
    };
    if header.attr("xmlns") != Some(ns::SERVER) {
        return Err("the answer is not a server-to-server stream".into());
    }
    let features = next_element(reader).await?;
    if !features.is("features", ns::STREAMS) {
        return Err(format!(
            "expected stream features, got <{}/>",
            features.name
        ));
    }
    Ok((header, features))
}
