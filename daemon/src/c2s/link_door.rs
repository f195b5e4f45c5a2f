//! The way a later connection reaches a bound session (stream resumption): a module keeps the
//! [`LinkDoor`], the session's task the [`LinkInbox`], and a new stream that proves it may take
//! the session over hands its [`Link`] through.

use super::session::Link;
use std::sync::Arc;

/// Put by a module in `SessionLocal::ext` (after a nonza or event it handled): later
/// connections reach this session through the [`LinkDoor`] the module kept (see [`link_door`]).
pub struct LinkInbox(Arc<Mailbox>);

/// The way into a session for a later connection (stream resumption); cloned freely.
#[derive(Clone)]
pub struct LinkDoor(Arc<Mailbox>);

/// One waiting link at a time, as the one-slot channel it replaces: every session with
/// resumption holds one for its whole life, and a tokio mpsc channel (cache-padded, with a
/// first block of 32 slots) cost ~0.8 KiB where this costs ~100 bytes.
struct Mailbox {
    slot: std::sync::Mutex<Option<Box<Link>>>,
    /// A link was put in the slot.
    arrived: tokio::sync::Notify,
    /// The slot was emptied, or the inbox is gone.
    emptied: tokio::sync::Notify,
    inbox_gone: std::sync::atomic::AtomicBool,
}

/// A door for a module to keep and the inbox to put in `SessionLocal::ext`.
pub fn link_door() -> (LinkDoor, LinkInbox) {
    let mailbox = Arc::new(Mailbox {
        slot: std::sync::Mutex::new(None),
        arrived: tokio::sync::Notify::new(),
        emptied: tokio::sync::Notify::new(),
        inbox_gone: std::sync::atomic::AtomicBool::new(false),
    });
    (LinkDoor(mailbox.clone()), LinkInbox(mailbox))
}

impl LinkDoor {
    /// Hands a connection to the session, waiting while another one is waiting there; gives
    /// the link back when the session is gone.
    pub async fn send(&self, link: Link) -> Result<(), Link> {
        let link = Box::new(link);
        let mailbox = &self.0;
        loop {
            let emptied = mailbox.emptied.notified();
            tokio::pin!(emptied);
            // Registered before looking, so an emptying in between is not missed.
            emptied.as_mut().enable();
            if mailbox
                .inbox_gone
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return Err(*link);
            }
            {
                let mut slot = mailbox.slot.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    *slot = Some(link);
                    drop(slot);
                    mailbox.arrived.notify_one();
                    return Ok(());
                }
            }
            emptied.await;
        }
    }
}

impl LinkInbox {
    /// The next connection handed over; waits for ever when none comes.
    pub(super) async fn recv(&self) -> Link {
        loop {
            // `notify_one` keeps a permit when nobody waits, so no knock is lost.
            let taken = self.0.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(link) = taken {
                self.0.emptied.notify_waiters();
                return *link;
            }
            self.0.arrived.notified().await;
        }
    }
}

impl Drop for LinkInbox {
    fn drop(&mut self) {
        self.0
            .inbox_gone
            .store(true, std::sync::atomic::Ordering::Release);
        // A link that came too late closes with the mailbox's last owner; senders give up.
        let late = self.0.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(late);
        self.0.emptied.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{XmlLimits, XmlReader};

    fn link() -> Link {
        let (_client, server_side) = tokio::io::duplex(64);
        let limits = XmlLimits {
            max_stanza_bytes: 1024,
            max_depth: 8,
            max_attributes: 8,
            max_name_bytes: 64,
        };
        let peer = "127.0.0.1:5222".parse().expect("literal");
        Link::start(
            XmlReader::new(server_side, limits),
            Box::new(tokio::io::sink()),
            peer,
            None,
        )
    }

    /// Every resumable session holds one for its whole life; the tokio channel it replaced
    /// took ~800 bytes.
    #[test]
    fn a_mailbox_is_small() {
        let size = std::mem::size_of::<Mailbox>();
        assert!(size <= 160, "mailbox: {size} bytes");
    }

    #[tokio::test]
    async fn one_link_waits_at_a_time_and_comes_back_when_the_session_is_gone() {
        let (door, inbox) = link_door();
        assert!(door.send(link()).await.is_ok(), "the slot is free");
        // A second sender waits for the slot until the session takes the first link.
        let second = tokio::spawn({
            let door = door.clone();
            async move { door.send(link()).await.is_ok() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "the slot is taken");
        let _first = inbox.recv().await;
        assert!(
            second.await.expect("task"),
            "went in once the slot was free"
        );
        let _second = inbox.recv().await;
        drop(inbox);
        assert!(door.send(link()).await.is_err(), "the session is gone");
    }
}
