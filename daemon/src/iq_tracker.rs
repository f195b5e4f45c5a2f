//! IQs the server itself asks (a module querying a client, later another server): each gets a
//! fresh id, and the reply (`result` or `error`) is handed back to the waiting module. Bounded,
//! and every wait has a deadline, so an unanswered question costs nothing for long.

use crate::jid::Jid;
use crate::xml::Element;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// Questions in flight at once; beyond this a module is told to try later.
pub const MAX_PENDING: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum IqError {
    /// No answer within the deadline.
    Timeout,
    /// Too many questions in flight.
    Busy,
    /// The addressee is not reachable (e.g. the session is gone).
    Undeliverable,
}

struct Pending {
    /// Who must answer: a reply from anyone else is ignored (ids are guessable).
    responder: String,
    reply: oneshot::Sender<Element>,
}

#[derive(Default)]
pub struct IqTracker {
    pending: Mutex<HashMap<String, Pending>>,
}

impl IqTracker {
    /// Registers a question to `responder`: returns the id to put on the IQ and the receiver of
    /// the answer. Prefer [`IqTracker::ask`], which also sends and waits.
    pub fn register(
        &self,
        responder: &Jid,
    ) -> Result<(String, oneshot::Receiver<Element>), IqError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Drop the entries whose askers stopped waiting (timed out or gave up).
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| !p.reply.is_closed());
        }
        if pending.len() >= MAX_PENDING {
            return Err(IqError::Busy);
        }
        let id = format!("hearth-{}", crate::stanza::random_id(9));
        let (tx, rx) = oneshot::channel();
        pending.insert(
            id.clone(),
            Pending {
                responder: responder.to_string(),
                reply: tx,
            },
        );
        Ok((id, rx))
    }

    /// Sends `iq` (its `to` set, `id` and `from` filled in here) with `send`, then waits for the
    /// answer for at most `deadline`.
    pub async fn ask(
        &self,
        domain: &str,
        mut iq: Element,
        deadline: Duration,
        send: impl FnOnce(Element) -> bool,
    ) -> Result<Element, IqError> {
        let to = iq
            .attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .ok_or(IqError::Undeliverable)?;
        let (id, rx) = self.register(&to)?;
        iq.set_attr("id", id.clone());
        iq.set_attr("from", domain.to_string());
        if !send(iq) {
            self.forget(&id);
            return Err(IqError::Undeliverable);
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            _ => {
                self.forget(&id);
                Err(IqError::Timeout)
            }
        }
    }

    /// A `result` or `error` IQ addressed to the server: true if it answered a question.
    pub fn resolve(&self, from: &Jid, reply: Element) -> bool {
        let Some(id) = reply.attr("id") else {
            return false;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get(id) {
            Some(p) if p.responder == from.to_string() => {}
            _ => return false,
        }
        let p = pending.remove(id).expect("checked above");
        drop(pending);
        p.reply.send(reply).is_ok()
    }

    fn forget(&self, id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn in_flight(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::ns;

    fn iq_to(to: &str) -> Element {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", to)
    }

    #[tokio::test]
    async fn the_right_responder_gets_through_and_others_are_ignored() {
        let tracker = std::sync::Arc::new(IqTracker::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let t = tracker.clone();
        let asking = tokio::spawn(async move {
            t.ask(
                "example.test",
                iq_to("a@example.test/phone"),
                Duration::from_secs(5),
                |iq| tx.send(iq).is_ok(),
            )
            .await
        });
        let sent = tokio::task::spawn_blocking(move || rx.recv().unwrap())
            .await
            .unwrap();
        let id = sent.attr("id").unwrap().to_string();
        assert_eq!(sent.attr("from"), Some("example.test"));
        let reply = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", id);
        let stranger = Jid::parse("mallory@example.test/x").unwrap();
        assert!(
            !tracker.resolve(&stranger, reply.clone()),
            "a spoofed answer"
        );
        let right = Jid::parse("a@example.test/phone").unwrap();
        assert!(tracker.resolve(&right, reply));
        assert_eq!(asking.await.unwrap().unwrap().attr("type"), Some("result"));
        assert_eq!(tracker.in_flight(), 0);
    }

    #[tokio::test]
    async fn unanswered_questions_time_out_and_are_forgotten() {
        let tracker = IqTracker::default();
        let r = tracker
            .ask(
                "example.test",
                iq_to("a@example.test/x"),
                Duration::from_millis(20),
                |_| true,
            )
            .await;
        assert_eq!(r, Err(IqError::Timeout));
        assert_eq!(tracker.in_flight(), 0);
        let r = tracker
            .ask(
                "example.test",
                iq_to("a@example.test/x"),
                Duration::from_secs(1),
                |_| false,
            )
            .await;
        assert_eq!(r, Err(IqError::Undeliverable));
    }
}
