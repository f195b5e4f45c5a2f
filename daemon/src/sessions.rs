//! The table of bound sessions, by bare JID then resource, and the handle through which other
//! tasks hand a session its stanzas.
//!
//! Each session owns a bounded queue. Delivery never waits: if a session's queue is full the
//! client is not reading, and it is disconnected rather than buffered without bound. The queue
//! ends in the session's one write path (`c2s::outbound`), where module layers see every stanza.

use crate::hooks::{Extensions, SessionFlag};
use crate::jid::Jid;
use crate::xml::Element;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

/// What the server tells a session besides stanzas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kick {
    /// Another session bound the same resource (RFC 6120 §7.7.2.2): stream error `conflict`.
    Replaced,
    /// The queue overflowed: `policy-violation`.
    TooSlow,
    /// The account was removed or its password changed: `not-authorized`.
    AccountGone,
}

/// State of a session that the delivery rules and other sessions need to see.
#[derive(Debug, Default)]
pub struct SessionShared {
    /// Sent initial presence and not yet unavailable (RFC 6121 §4.2).
    pub available: AtomicBool,
    /// Presence priority (−128..127); messages to the bare JID go to the highest non-negative.
    pub priority: AtomicI32,
    /// Requested the roster, so it gets roster pushes (RFC 6121 §2.1.6).
    pub interested: AtomicBool,
    /// The last broadcast presence, answered to probes (RFC 6121 §4.3.2).
    pub presence: Mutex<Option<Element>>,
    /// The connection is gone and a module keeps the session waiting for a new one (stream
    /// management hibernation): stanzas for it reach nobody until then.
    pub detached: AtomicBool,
    /// One bit per module feature switched on for this session (`SessionFlag`), readable from
    /// any task: e.g. whether it wants carbons.
    flags: AtomicU32,
    /// Module state other tasks must reach; nothing is allocated until a module uses it.
    ext: Mutex<Extensions>,
    kick: Mutex<Option<Kick>>,
    kicked: Notify,
}

impl SessionShared {
    pub fn has(&self, flag: SessionFlag) -> bool {
        self.flags.load(Ordering::Acquire) & flag.0 != 0
    }

    pub fn set_flag(&self, flag: SessionFlag, on: bool) {
        if on {
            self.flags.fetch_or(flag.0, Ordering::AcqRel);
        } else {
            self.flags.fetch_and(!flag.0, Ordering::AcqRel);
        }
    }

    /// Runs `f` on the session's shared module state.
    pub fn with_ext<T>(&self, f: impl FnOnce(&mut Extensions) -> T) -> T {
        f(&mut self.ext.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn kick(&self, why: Kick) {
        *self.kick.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.kicked.notify_one();
    }

    /// Resolves when the session has been kicked, with the reason.
    pub async fn kicked(&self) -> Kick {
        loop {
            if let Some(k) = self.kick.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return k;
            }
            self.kicked.notified().await;
        }
    }
}

#[derive(Clone, Debug)]
pub struct SessionHandle {
    pub id: u64,
    pub jid: Jid,
    /// Boxed so the channel's preallocated slots cost 8 bytes each, not a whole `Element`.
    pub tx: mpsc::Sender<Box<Element>>,
    pub shared: Arc<SessionShared>,
}

impl SessionHandle {
    /// Queues a stanza; a full queue kicks the session. Returns whether it was queued.
    pub fn deliver(&self, stanza: Element) -> bool {
        match self.tx.try_send(Box::new(stanza)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                log::warn!("{}: outbound queue full, disconnecting", self.jid);
                self.shared.kick(Kick::TooSlow);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn available(&self) -> bool {
        self.shared.available.load(Ordering::Relaxed)
    }

    pub fn priority(&self) -> i32 {
        self.shared.priority.load(Ordering::Relaxed)
    }

    /// Has a live connection (is not detached, waiting to be taken over).
    pub fn connected(&self) -> bool {
        !self.shared.detached.load(Ordering::Acquire)
    }

    pub fn last_presence(&self) -> Option<Element> {
        self.shared
            .presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Default)]
pub struct SessionTable {
    sessions: Mutex<HashMap<String, Vec<SessionHandle>>>,
    next_id: AtomicU64,
    /// Session tasks still running: a session leaves the table before its last work (handing
    /// what it held to other sessions or storage) is done, and shutdown waits for that too.
    running: AtomicUsize,
}

/// Counts a running session task while it lives.
pub struct RunningTask<'a>(&'a AtomicUsize);

impl Drop for RunningTask<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SessionTable {
    /// Marks a session task as running until the guard is dropped.
    pub fn task_running(&self) -> RunningTask<'_> {
        self.running.fetch_add(1, Ordering::AcqRel);
        RunningTask(&self.running)
    }

    /// Session tasks not yet finished, bound or not.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a bound session, returning the one it replaces (same full JID), which the caller kicks.
    pub fn bind(&self, handle: SessionHandle) -> Option<SessionHandle> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(handle.jid.bare_string()).or_default();
        let old = list
            .iter()
            .position(|h| h.jid.resource == handle.jid.resource)
            .map(|i| list.remove(i));
        list.push(handle);
        old
    }

    /// Removes a session, if it is still the one bound under its JID.
    pub fn unbind(&self, jid: &Jid, id: u64) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let bare = jid.bare_string();
        if let Some(list) = map.get_mut(&bare) {
            list.retain(|h| h.id != id);
            if list.is_empty() {
                map.remove(&bare);
            }
        }
    }

    /// All sessions of an account.
    pub fn sessions_of(&self, bare: &str) -> Vec<SessionHandle> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bare)
            .cloned()
            .unwrap_or_default()
    }

    /// The session bound to a full JID.
    pub fn session(&self, full: &Jid) -> Option<SessionHandle> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&full.bare_string())?
            .iter()
            .find(|h| h.jid.resource == full.resource)
            .cloned()
    }

    pub fn resource_taken(&self, bare: &str, resource: &str) -> bool {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(bare).is_some_and(|l| {
            l.iter()
                .any(|h| h.jid.resource.as_deref() == Some(resource))
        })
    }

    /// Number of bound sessions and of accounts with at least one.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        (map.values().map(Vec::len).sum(), map.len())
    }

    /// Every session, e.g. to tell them the server is shutting down.
    pub fn all(&self) -> Vec<SessionHandle> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect()
    }
}
