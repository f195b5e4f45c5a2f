//! A bound client session: one task reads stanzas (never cancelled mid-token), this task routes
//! them, writes what the router queued, and watches the clock for stalled or silent clients.

use super::negotiate::{TlsRead, TlsWrite};
use super::stream;
use crate::jid::Jid;
use crate::modules::presence::{self, Outcome};
use crate::router::{Kick, SessionHandle, SessionShared};
use crate::server::Server;
use crate::stanza::{self, StanzaError};
use crate::xml::{ns, Element, XmlError, XmlEvent, XmlReader};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// How often a session checks its timers. Coarse on purpose: 1,000 idle sessions should not
/// wake the CPU of a Pi Zero often.
const TICK: Duration = Duration::from_secs(10);
/// After an unanswered server ping, how long before the connection counts as dead.
const PING_GRACE: Duration = Duration::from_secs(60);
/// Stanzas written per wake-up before yielding, so one busy session does not starve others.
const WRITE_BATCH: usize = 32;

pub struct Bound {
    pub reader: XmlReader<TlsRead>,
    pub writer: TlsWrite,
    pub jid: Jid,
    pub peer: SocketAddr,
}

pub async fn run(server: Arc<Server>, bound: Bound) {
    let Bound {
        reader,
        mut writer,
        jid,
        peer,
    } = bound;
    let (tx, mut outbound) = mpsc::channel(server.config.limits.session_queue);
    let shared = Arc::new(SessionShared::default());
    let handle = SessionHandle {
        id: server.router.next_id(),
        jid: jid.clone(),
        tx,
        shared: shared.clone(),
    };
    if let Some(old) = server.router.bind(handle.clone()) {
        old.shared.kick(Kick::Replaced);
    }
    // Unbinds on every way out, a panic in a module included: no ghost sessions in the router.
    let _bound = Unbind {
        server: &server,
        jid: &jid,
        id: handle.id,
    };
    let progress = reader.progress();
    // Boxed: tokio preallocates a block of 32 slots per channel, so slot size matters per session.
    let (in_tx, mut inbound) = mpsc::channel::<Box<Result<XmlEvent, XmlError>>>(1);
    let mut reader_task = tokio::spawn(async move {
        let mut reader = reader;
        loop {
            let ev = reader.next().await;
            let more = matches!(ev, Ok(XmlEvent::Stanza(_)));
            let failed = matches!(&ev, Err(e) if e.condition().is_some());
            if in_tx.send(Box::new(ev)).await.is_err() || !more {
                if failed {
                    reader.discard_input(super::negotiate::LINGER).await;
                }
                break;
            }
        }
    });
    let mut shutdown = server.shutdown_signal();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stanza_timeout = Duration::from_secs(server.config.limits.stanza_timeout_secs);
    let idle_timeout = Duration::from_secs(server.config.limits.idle_timeout_secs);
    let mut ping_sent = false;
    let mut directed = HashSet::new();
    let mut out = String::new();

    let close: Option<(&str, String)> = loop {
        tokio::select! {
            ev = inbound.recv() => match ev.map(|b| *b) {
                Some(Ok(XmlEvent::Stanza(el))) => {
                    ping_sent = false;
                    if let Err(close) = handle_stanza(&server, &handle, el, &mut directed, &mut writer).await {
                        break close;
                    }
                }
                Some(Ok(XmlEvent::StreamEnd)) => {
                    let _ = stream::send(&mut writer, "</stream:stream>").await;
                    break None;
                }
                Some(Ok(XmlEvent::StreamStart(_))) => break Some(("not-well-formed", "a second stream header".into())),
                Some(Err(e)) => break e.condition().map(|c| (c, e.to_string())),
                None => break None,
            },
            Some(first) = outbound.recv() => {
                out.clear();
                first.write_to(&mut out, ns::CLIENT);
                for _ in 1..WRITE_BATCH {
                    match outbound.try_recv() {
                        Ok(more) => more.write_to(&mut out, ns::CLIENT),
                        Err(_) => break,
                    }
                }
                if stream::send(&mut writer, &out).await.is_err() {
                    break None;
                }
                if out.capacity() > 16 * 1024 {
                    out = String::new();
                }
            }
            kick = shared.kicked() => break Some(match kick {
                Kick::Replaced => ("conflict", "replaced by a new session with the same resource".into()),
                Kick::TooSlow => ("policy-violation", "too many stanzas waiting for this client".into()),
                Kick::AccountGone => ("not-authorized", "the account was removed".into()),
            }),
            _ = shutdown.changed() => break Some(("system-shutdown", "the server is restarting".into())),
            _ = tick.tick() => {
                if progress.partial_for().is_some_and(|d| d > stanza_timeout) {
                    break Some(("policy-violation", "a stanza took too long to arrive".into()));
                }
                let silent = progress.silent_for();
                if silent > idle_timeout + PING_GRACE && ping_sent {
                    break Some(("connection-timeout", "no answer to ping".into()));
                }
                if silent > idle_timeout && !ping_sent {
                    ping_sent = true;
                    let ping = Element::new("iq", ns::CLIENT)
                        .with_attr("type", "get")
                        .with_attr("id", format!("ping-{}", stanza::random_id(6)))
                        .with_attr("from", server.domain().to_string())
                        .with_attr("to", jid.to_string())
                        .with_child(Element::new("ping", crate::modules::ping::NS));
                    if stream::send(&mut writer, &ping.to_xml(ns::CLIENT)).await.is_err() {
                        break None;
                    }
                }
            }
        }
    };

    server.router.unbind(&jid, handle.id);
    if let Some((condition, text)) = &close {
        log::info!("{peer}: {jid} closed with {condition}: {text}");
        stream::fail(&mut writer, None, condition, Some(text)).await;
        // The reader task swallows late input after a parse error; give it that moment.
        let _ = tokio::time::timeout(super::negotiate::LINGER, &mut reader_task).await;
        reader_task.abort();
    } else {
        reader_task.abort();
        log::info!("{peer}: {jid} logged out");
        let _ = tokio::time::timeout(Duration::from_secs(5), writer.shutdown()).await;
    }
    presence::session_ended(&server, &handle, &directed).await;
}

struct Unbind<'a> {
    server: &'a Server,
    jid: &'a Jid,
    id: u64,
}

impl Drop for Unbind<'_> {
    fn drop(&mut self) {
        self.server.router.unbind(self.jid, self.id);
    }
}

/// Handles one stanza from the client; Err closes the stream with that condition.
async fn handle_stanza(
    server: &Arc<Server>,
    session: &SessionHandle,
    mut el: Element,
    directed: &mut HashSet<String>,
    writer: &mut TlsWrite,
) -> Result<(), Option<(&'static str, String)>> {
    if el.ns != ns::CLIENT || !matches!(el.name.as_str(), "message" | "presence" | "iq") {
        return Err(Some((
            "unsupported-stanza-type",
            format!("<{}/> in {} is not understood here", el.name, el.ns),
        )));
    }
    // The server, not the client, says who sent a stanza (RFC 6120 §8.1.2.1).
    el.set_attr("from", session.jid.to_string());
    if stanza::is_presence(&el) {
        if presence::outbound(server, session, el, directed).await == Outcome::BecameAvailable {
            presence::deliver_pending_requests(server, session).await;
            deliver_offline(server, session, writer)
                .await
                .map_err(|_| None)?;
        }
        return Ok(());
    }
    if stanza::is_iq(&el) {
        let kind = el.attr("type").unwrap_or("");
        if !matches!(kind, "get" | "set" | "result" | "error") || el.attr("id").is_none() {
            crate::routing::bounce(server, &el, StanzaError::bad_request());
            return Ok(());
        }
        // Replies to our own pings need no routing.
        if matches!(kind, "result" | "error") && el.attr("to").is_none_or(|t| t == server.domain())
        {
            return Ok(());
        }
    }
    crate::routing::route(server, el, Some(session)).await;
    Ok(())
}

/// Writes stored offline messages straight to the socket, then deletes them: a crash in between
/// delivers twice rather than never.
async fn deliver_offline(
    server: &Arc<Server>,
    session: &SessionHandle,
    writer: &mut TlsWrite,
) -> std::io::Result<()> {
    let Some(user) = &session.jid.local else {
        return Ok(());
    };
    if session.priority() < 0 {
        return Ok(());
    }
    let messages = match server.storage.offline_messages(user).await {
        Ok(m) => m,
        Err(e) => {
            log::error!("cannot read offline messages of {user}: {e}");
            return Ok(());
        }
    };
    let Some(last) = messages.last().map(|m| m.0) else {
        return Ok(());
    };
    let to = crate::xml::escape_attr(&session.jid.to_string()).into_owned();
    for (_, _, xml) in &messages {
        // Stored with the bare JID; deliver to this resource.
        let xml = retarget(xml, &to);
        stream::send(writer, &xml).await?;
    }
    if let Err(e) = server.storage.delete_offline(user, last).await {
        log::error!("cannot delete delivered offline messages of {user}: {e}");
    }
    Ok(())
}

/// Replaces the `to` attribute of a stored message's root element.
fn retarget(xml: &str, to: &str) -> String {
    let end = xml.find('>').unwrap_or(xml.len());
    let head = &xml[..end];
    if let Some(start) = head.find(" to='") {
        if let Some(len) = head[start + 5..].find('\'') {
            return format!(
                "{} to='{}'{}",
                &xml[..start],
                to,
                &xml[start + 5 + len + 1..]
            );
        }
    }
    xml.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn retarget_replaces_only_the_root_to() {
        let x = "<message to='a@b' from='c@b/x'><body>to='z'</body></message>";
        assert_eq!(
            super::retarget(x, "a@b/r"),
            "<message to='a@b/r' from='c@b/x'><body>to='z'</body></message>"
        );
    }
}
