//! A bound client session: one task reads stanzas (never cancelled mid-token), this task runs
//! them through the delivery rules and module hooks, writes what others queued for it through
//! the one write path (`outbound::SessionLocal`), and watches the clock for stalled or silent
//! clients.

use super::outbound::SessionLocal;
use super::stream;
use crate::hooks::{CloseReason, Flow, Hook, SessionEvent};
use crate::jid::Jid;
use crate::server::Server;
use crate::sessions::{Kick, SessionHandle, SessionShared};
use crate::stanza::{self, StanzaError};
use crate::xml::{ns, Element, XmlError, XmlEvent, XmlReader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How often a session checks its timers. Coarse on purpose: 1,000 idle sessions should not
/// wake the CPU of a Pi Zero often.
const TICK: Duration = Duration::from_secs(10);
/// After an unanswered server ping, how long before the connection counts as dead.
const PING_GRACE: Duration = Duration::from_secs(60);
/// Stanzas written per wake-up before yielding, so one busy session does not starve others.
const WRITE_BATCH: usize = 32;
pub struct Bound<R> {
    pub reader: XmlReader<R>,
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    pub jid: Jid,
    pub peer: SocketAddr,
}

pub async fn run<R>(server: Arc<Server>, bound: Bound<R>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let Bound {
        reader,
        writer,
        jid,
        peer,
    } = bound;
    let mut local = SessionLocal::new(writer);
    let (tx, mut outbound) = mpsc::channel(server.config.limits.session_queue);
    let shared = Arc::new(SessionShared::default());
    let handle = SessionHandle {
        id: server.sessions.next_id(),
        jid: jid.clone(),
        tx,
        shared: shared.clone(),
    };
    if let Some(old) = server.sessions.bind(handle.clone()) {
        old.shared.kick(Kick::Replaced);
    }
    // Unbinds on every way out, a panic in a module included: no ghost sessions in the table.
    let mut bound_guard = Unbind {
        server: &server,
        jid: &jid,
        id: handle.id,
        armed: true,
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
    let mut probed = false;
    // Set when the connection broke rather than the client saying goodbye.
    let mut link_lost = false;
    {
        let mut ev = SessionEvent {
            session: &handle,
            local: &mut local,
            reason: None,
        };
        server
            .modules
            .session_event(&server, Hook::SessionBound, &mut ev)
            .await;
    }

    let close: Option<(&str, String)> = loop {
        tokio::select! {
            ev = inbound.recv() => match ev.map(|b| *b) {
                Some(Ok(XmlEvent::Stanza(el))) => {
                    probed = false;
                    // Boxed: handling a stanza (delivery, hooks) needs KiB of future state
                    // for a moment; inline, every idle session would reserve it for good.
                    if let Err(close) = Box::pin(handle_element(&server, &handle, el, &mut local)).await {
                        link_lost = close.is_none();
                        break close;
                    }
                }
                Some(Ok(XmlEvent::StreamEnd)) => {
                    let _ = stream::send(local.writer(), "</stream:stream>").await;
                    break None;
                }
                Some(Ok(XmlEvent::StreamStart(_))) => break Some(("not-well-formed", "a second stream header".into())),
                Some(Err(e)) => {
                    link_lost = e.condition().is_none();
                    break e.condition().map(|c| (c, e.to_string()));
                }
                None => {
                    link_lost = true;
                    break None;
                }
            },
            Some(first) = outbound.recv() => {
                let mut batch = vec![*first];
                for _ in 1..WRITE_BATCH {
                    match outbound.try_recv() {
                        Ok(more) => batch.push(*more),
                        Err(_) => break,
                    }
                }
                if local.send_all(batch).await.is_err() {
                    link_lost = true;
                    break None;
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
                if silent > idle_timeout + PING_GRACE && probed {
                    break Some(("connection-timeout", "no answer to ping".into()));
                }
                if silent > idle_timeout && !probed {
                    // A module probes the client (XEP-0199 ping); any answer counts as life.
                    probed = true;
                    let mut ev = SessionEvent { session: &handle, local: &mut local, reason: None };
                    server.modules.session_event(&server, Hook::SessionIdle, &mut ev).await;
                }
            }
        }
    };

    let reason = match &close {
        None if link_lost => CloseReason::LinkLost,
        None => CloseReason::Logout,
        Some(("connection-timeout", _)) => CloseReason::LinkLost,
        Some((condition, _)) => CloseReason::StreamError(condition),
    };
    let kept = {
        let mut ev = SessionEvent {
            session: &handle,
            local: &mut local,
            reason: Some(reason.clone()),
        };
        server
            .modules
            .session_event(&server, Hook::SessionClosing, &mut ev)
            .await
            == Flow::Handled
    };
    if kept {
        // A module keeps the session bound (stream management hibernation) and ends it later.
        bound_guard.armed = false;
        reader_task.abort();
        log::info!("{peer}: {jid} detached; kept by a module");
        return;
    }
    server.sessions.unbind(&jid, handle.id);
    if let Some((condition, text)) = &close {
        log::info!("{peer}: {jid} closed with {condition}: {text}");
        stream::fail(local.writer(), None, condition, Some(text)).await;
        // The reader task swallows late input after a parse error; give it that moment.
        let _ = tokio::time::timeout(super::negotiate::LINGER, &mut reader_task).await;
        reader_task.abort();
    } else {
        reader_task.abort();
        log::info!("{peer}: {jid} logged out");
        let _ = tokio::time::timeout(Duration::from_secs(5), local.writer().shutdown()).await;
    }
    server
        .modules
        .session_closed(&server, &handle, &mut local, reason)
        .await;
}

struct Unbind<'a> {
    server: &'a Server,
    jid: &'a Jid,
    id: u64,
    armed: bool,
}

impl Drop for Unbind<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.server.sessions.unbind(self.jid, self.id);
        }
    }
}

/// Handles one element from the client; Err closes the stream with that condition.
async fn handle_element(
    server: &Arc<Server>,
    session: &SessionHandle,
    mut el: Element,
    local: &mut SessionLocal,
) -> Result<(), Option<(&'static str, String)>> {
    if el.ns != ns::CLIENT || !matches!(el.name.as_str(), "message" | "presence" | "iq") {
        let Some(module) = server.modules.nonza_handler(&el.name, &el.ns).cloned() else {
            return Err(Some((
                "unsupported-stanza-type",
                format!("<{}/> in {} is not understood here", el.name, el.ns),
            )));
        };
        module
            .on_nonza(server, session, local, &el)
            .await
            .map_err(Some)?;
        return local.release().await.map_err(|_| None);
    }
    // The server, not the client, says who sent a stanza (RFC 6120 §8.1.2.1).
    el.set_attr("from", session.jid.to_string());
    if stanza::is_iq(&el) {
        let kind = el.attr("type").unwrap_or("");
        if !matches!(kind, "get" | "set" | "result" | "error") || el.attr("id").is_none() {
            crate::delivery::bounce(server, &el, StanzaError::bad_request());
            return Ok(());
        }
    }
    let was_available = session.available();
    crate::delivery::from_session(server, el, session, local).await;
    if !was_available && session.available() {
        // Initial presence (RFC 6121 §4.2): what waited for the session can come now.
        let mut ev = SessionEvent {
            session,
            local,
            reason: None,
        };
        server
            .modules
            .session_event(server, Hook::SessionAvailable, &mut ev)
            .await;
    }
    local.release().await.map_err(|_| None)
}
