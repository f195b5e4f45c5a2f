//! A bound client session: one task per connection reads stanzas (from a parser that is never
//! cancelled mid-token), runs them through the delivery rules and module hooks, writes what
//! others queued for it through the one write path (`outbound::SessionLocal`), and watches the
//! clock for stalled or silent clients.

pub use super::link_door::{link_door, LinkDoor, LinkInbox};
use super::outbound::SessionLocal;
use super::stream;
use crate::hooks::{CloseReason, Flow, Hook, SessionEvent};
use crate::jid::Jid;
use crate::server::Server;
use crate::sessions::{Kick, SessionHandle, SessionShared};
use crate::stanza::{self, StanzaError};
use crate::xml::{ns, Element, ReadProgress, XmlError, XmlEvent, XmlReader};
use futures_util::stream::{Stream, StreamExt};
use std::net::SocketAddr;
use std::pin::Pin;
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

/// The parser's events, polled by the session's own task. The stream owns the reader and keeps
/// a read in progress across polls, so the session's `select!` may drop its `next()` without
/// losing a token; after an event that ends the stream in error it swallows the peer's late
/// input (see `negotiate::LINGER`) and then ends. Once per link, not per stanza: no reading
/// task and no channel, which cost an idle session about 1.5 KiB (a task cell, a channel and
/// its first block of slots).
type Events = Pin<Box<dyn Stream<Item = Result<XmlEvent, XmlError>> + Send>>;

/// One connection carrying a session: the parser's events and the write half. A session starts
/// with the link it logged in on; a module may let a later connection take it over (stream
/// resumption), through the session's [`LinkInbox`].
pub struct Link {
    /// None once the link stopped reading (the read half is then closed).
    events: Option<Events>,
    progress: Arc<ReadProgress>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    peer: SocketAddr,
    /// The nonza with which a new connection asked for the session; its module finds it in
    /// `SessionLocal::ext` as [`AttachRequest`] when `Hook::SessionReattached` runs.
    request: Option<Box<Element>>,
}

/// What the events stream does next.
enum ReadNext {
    Event,
    Linger,
    Done,
}

impl Link {
    /// Takes a connection's parser and write half.
    pub fn start<R>(
        reader: XmlReader<R>,
        writer: Box<dyn AsyncWrite + Send + Unpin>,
        peer: SocketAddr,
        request: Option<Element>,
    ) -> Link
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let progress = reader.progress();
        let events = futures_util::stream::unfold(
            (reader, ReadNext::Event),
            |(mut reader, next)| async move {
                match next {
                    ReadNext::Event => {
                        let ev = reader.next().await;
                        let next = match &ev {
                            Ok(XmlEvent::Stanza(_)) => ReadNext::Event,
                            Err(e) if e.condition().is_some() => ReadNext::Linger,
                            _ => ReadNext::Done,
                        };
                        Some((ev, (reader, next)))
                    }
                    ReadNext::Linger => {
                        reader.discard_input(super::negotiate::LINGER).await;
                        None
                    }
                    ReadNext::Done => None,
                }
            },
        );
        Link {
            events: Some(Box::pin(events)),
            progress,
            writer,
            peer,
            request: request.map(Box::new),
        }
    }

    /// The write half, e.g. to refuse the connection when the session it asked for is gone.
    pub fn into_writer(self) -> Box<dyn AsyncWrite + Send + Unpin> {
        self.writer
    }

    /// The next event; None when the stream ended or the link stopped reading.
    async fn next_event(&mut self) -> Option<Result<XmlEvent, XmlError>> {
        self.events.as_mut()?.next().await
    }

    /// Stops reading and drops the parser with its half of the connection.
    fn stop_reading(&mut self) {
        self.events = None;
    }
}

/// Put by a module in `SessionLocal::ext` when it answers `SessionClosing` with `Handled`: the
/// session stays bound without a connection until this instant, waiting for a link through its
/// `LinkInbox`; stanzas for it still pass the write path's layers (to a sink).
pub struct Detached {
    pub until: tokio::time::Instant,
}

/// The nonza a new connection sent to take the session over; read by the module on
/// `Hook::SessionReattached`.
#[derive(Default)]
pub struct AttachRequest(pub Option<Element>);

/// How one link ended.
enum LinkEnd {
    /// The stream ended; `close` is the stream error to send, if any.
    Closed {
        close: Option<(&'static str, String)>,
        link_lost: bool,
    },
    /// A new connection took the session over.
    TakenOver(Link),
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
    let _running = server.sessions.task_running();
    let mut link = Link::start(reader, writer, peer, None);
    let mut local = SessionLocal::new(std::mem::replace(
        &mut link.writer,
        Box::new(tokio::io::sink()),
    ));
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
    let _bound_guard = Unbind {
        server: &server,
        jid: &jid,
        id: handle.id,
    };
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
    let mut inbox: Option<LinkInbox> = local.ext.remove::<LinkInbox>();
    let mut shutdown = server.shutdown_signal();
    let reason = loop {
        let end = drive_link(
            &server,
            &handle,
            &mut link,
            &mut local,
            &mut outbound,
            &mut inbox,
            &mut shutdown,
        )
        .await;
        let (close, link_lost) = match end {
            LinkEnd::TakenOver(new) => {
                log::info!(
                    "{}: {jid} moved to a new connection from {}",
                    link.peer,
                    new.peer
                );
                link.stop_reading();
                // Boxed, as below: rare paths should not grow every session's task.
                link = Box::pin(attach(&server, &handle, &mut local, new)).await;
                continue;
            }
            LinkEnd::Closed { close, link_lost } => (close, link_lost),
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
        let detached = local
            .ext
            .remove::<Detached>()
            .filter(|_| kept && inbox.is_some());
        if detached.is_none() {
            server.sessions.unbind(&jid, handle.id);
        }
        if let Some((condition, text)) = &close {
            log::info!("{}: {jid} closed with {condition}: {text}", link.peer);
            // After a parse error the events stream swallows late input while the error goes
            // out, so that closing does not reset the connection before the peer reads it.
            let linger = tokio::time::timeout(super::negotiate::LINGER, link.next_event());
            let _ = tokio::join!(
                stream::fail(local.writer(), None, condition, Some(text)),
                linger
            );
        } else if !link_lost {
            log::info!("{}: {jid} logged out", link.peer);
            let _ = tokio::time::timeout(Duration::from_secs(5), local.writer().shutdown()).await;
        }
        link.stop_reading();
        let Some(detached) = detached else {
            break reason;
        };
        log::info!("{}: {jid} detached; kept by a module", link.peer);
        shared
            .detached
            .store(true, std::sync::atomic::Ordering::Release);
        local.replace_writer(Box::new(tokio::io::sink()));
        match Box::pin(wait_detached(
            &shared,
            &mut local,
            &mut outbound,
            &mut inbox,
            &mut shutdown,
            detached,
        ))
        .await
        {
            Ok(new) => link = Box::pin(attach(&server, &handle, &mut local, new)).await,
            Err(end) => break end,
        }
    };
    server.sessions.unbind(&jid, handle.id);
    // What was queued for the session still passes the layers (which may hand it elsewhere).
    outbound.close();
    let mut rest = Vec::new();
    while let Ok(s) = outbound.try_recv() {
        rest.push(*s);
    }
    local.replace_writer(Box::new(tokio::io::sink()));
    let _ = local.send_all(rest).await;
    server
        .modules
        .session_closed(&server, &handle, &mut local, reason)
        .await;
}

/// Runs the session on one connection until it ends or another takes over.
async fn drive_link(
    server: &Arc<Server>,
    handle: &SessionHandle,
    link: &mut Link,
    local: &mut SessionLocal,
    outbound: &mut mpsc::Receiver<Box<Element>>,
    inbox: &mut Option<LinkInbox>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> LinkEnd {
    let shared = &handle.shared;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stanza_timeout = Duration::from_secs(server.config.limits.stanza_timeout_secs);
    let idle_timeout = Duration::from_secs(server.config.limits.idle_timeout_secs);
    let mut probed = false;
    let closed = |close, link_lost| LinkEnd::Closed { close, link_lost };
    loop {
        tokio::select! {
            ev = link.next_event() => match ev {
                Some(Ok(XmlEvent::Stanza(el))) => {
                    probed = false;
                    // Boxed: handling a stanza (delivery, hooks) needs KiB of future state
                    // for a moment; inline, every idle session would reserve it for good.
                    let result = Box::pin(handle_element(server, handle, el, local)).await;
                    if let Some(i) = local.ext.remove::<LinkInbox>() {
                        *inbox = Some(i);
                    }
                    if let Err(close) = result {
                        let link_lost = close.is_none();
                        return closed(close, link_lost);
                    }
                }
                Some(Ok(XmlEvent::StreamEnd)) => {
                    let _ = stream::send(local.writer(), "</stream:stream>").await;
                    return closed(None, false);
                }
                Some(Ok(XmlEvent::StreamStart(_))) => return closed(Some(("not-well-formed", "a second stream header".into())), false),
                Some(Err(e)) => {
                    let link_lost = e.condition().is_none();
                    return closed(e.condition().map(|c| (c, e.to_string())), link_lost);
                }
                None => return closed(None, true),
            },
            Some(first) = outbound.recv() => {
                let batch = batch(*first, outbound);
                if local.send_all(batch).await.is_err() {
                    return closed(None, true);
                }
            }
            Some(new) = next_link(inbox) => return LinkEnd::TakenOver(new),
            kick = shared.kicked() => return closed(Some(kick_condition(kick)), false),
            _ = shutdown.changed() => return closed(Some(("system-shutdown", "the server is restarting".into())), false),
            _ = tick.tick() => {
                if link.progress.partial_for().is_some_and(|d| d > stanza_timeout) {
                    return closed(Some(("policy-violation", "a stanza took too long to arrive".into())), false);
                }
                let silent = link.progress.silent_for();
                if silent > idle_timeout + PING_GRACE && probed {
                    return closed(Some(("connection-timeout", "no answer to ping".into())), false);
                }
                if silent > idle_timeout && !probed {
                    // A module probes the client (XEP-0199 ping); any answer counts as life.
                    probed = true;
                    let mut ev = SessionEvent { session: handle, local, reason: None };
                    server.modules.session_event(server, Hook::SessionIdle, &mut ev).await;
                }
            }
        }
    }
}

/// A detached session: stanzas still pass the layers until a new link comes (`Ok`) or the
/// wait ends (`Err` with the reason the session closes for good).
async fn wait_detached(
    shared: &SessionShared,
    local: &mut SessionLocal,
    outbound: &mut mpsc::Receiver<Box<Element>>,
    inbox: &mut Option<LinkInbox>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    detached: Detached,
) -> Result<Link, CloseReason> {
    loop {
        tokio::select! {
            Some(new) = next_link(inbox) => return Ok(new),
            Some(first) = outbound.recv() => {
                let batch = batch(*first, outbound);
                let _ = local.send_all(batch).await;
            }
            kick = shared.kicked() => return Err(CloseReason::StreamError(kick_condition(kick).0)),
            _ = shutdown.changed() => return Err(CloseReason::StreamError("system-shutdown")),
            _ = tokio::time::sleep_until(detached.until) => return Err(CloseReason::LinkLost),
        }
    }
}

/// Puts a new connection in place: its writer into the write path, then the module that
/// handed it over answers its request (`Hook::SessionReattached`).
async fn attach(
    server: &Arc<Server>,
    handle: &SessionHandle,
    local: &mut SessionLocal,
    mut new: Link,
) -> Link {
    local.replace_writer(std::mem::replace(
        &mut new.writer,
        Box::new(tokio::io::sink()),
    ));
    handle
        .shared
        .detached
        .store(false, std::sync::atomic::Ordering::Release);
    local.ext.get_or_default::<AttachRequest>().0 = new.request.take().map(|b| *b);
    let mut ev = SessionEvent {
        session: handle,
        local,
        reason: None,
    };
    server
        .modules
        .session_event(server, Hook::SessionReattached, &mut ev)
        .await;
    local.ext.remove::<AttachRequest>();
    let _ = local.release().await;
    new
}

async fn next_link(inbox: &mut Option<LinkInbox>) -> Option<Link> {
    match inbox {
        Some(i) => Some(i.recv().await),
        None => std::future::pending().await,
    }
}

/// The first queued stanza and what else is waiting, up to a batch.
fn batch(first: Element, outbound: &mut mpsc::Receiver<Box<Element>>) -> Vec<Element> {
    let mut batch = vec![first];
    for _ in 1..WRITE_BATCH {
        match outbound.try_recv() {
            Ok(more) => batch.push(*more),
            Err(_) => break,
        }
    }
    batch
}

fn kick_condition(kick: Kick) -> (&'static str, String) {
    match kick {
        Kick::Replaced => (
            "conflict",
            "replaced by a new session with the same resource".into(),
        ),
        Kick::TooSlow => (
            "policy-violation",
            "too many stanzas waiting for this client".into(),
        ),
        Kick::AccountGone => ("not-authorized", "the account was removed".into()),
    }
}

struct Unbind<'a> {
    server: &'a Server,
    jid: &'a Jid,
    id: u64,
}

impl Drop for Unbind<'_> {
    fn drop(&mut self) {
        self.server.sessions.unbind(self.jid, self.id);
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
    local.received(&el);
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
