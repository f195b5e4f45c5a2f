//! The one write path to a client: every stanza for a session, whether another task queued it
//! (`SessionHandle::deliver`) or the session's own task produced it (offline messages, pings,
//! IQ replies during an event), passes [`SessionLocal::send`], and so every outbound layer a
//! module installed. That is where stream management counts and holds stanzas and where client
//! state indication queues them, as Prosody's `mod_smacks` and `mod_csi_simple` wrap
//! `session.send`.

use crate::hooks::Extensions;
use crate::xml::{ns, Element};
use std::any::Any;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A module's filter on a session's outbound stanzas. It lives in the session's task, so it
/// needs no locks; it must bound what it holds (a client that does not read is disconnected by
/// the bounded queue before it, a layer that holds must have its own limit).
pub trait OutboundLayer: Send + Any {
    /// A stanza on its way to the client. Push what should go on now to `pass`: the stanza
    /// itself, nothing (held), or held stanzas followed by this one (flush).
    fn outgoing(&mut self, stanza: Element, pass: &mut Vec<Element>);
    /// Stanzas the layer lets go outside `outgoing` (e.g. on `<active/>`); the session asks
    /// after each nonza and each module event it ran.
    fn release(&mut self, _pass: &mut Vec<Element>) {}
    /// Sees each stanza the client sent, before it is handled (stream management counts them).
    fn received(&mut self, _stanza: &Element) {}
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// What a session's task owns: the socket's write half, the layers, and module state that only
/// this task touches. An idle session with no layers pays for an empty `Vec` and an empty
/// `Extensions` (8 bytes).
pub struct SessionLocal {
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// Ordered by priority, highest first: a stanza passes the first layer first.
    layers: Vec<(i16, Box<dyn OutboundLayer>)>,
    /// Module state private to this session's task (e.g. directed presences).
    pub ext: Extensions,
}

impl SessionLocal {
    pub fn new(writer: Box<dyn AsyncWrite + Send + Unpin>) -> SessionLocal {
        SessionLocal {
            writer,
            layers: Vec::new(),
            ext: Extensions::default(),
        }
    }

    /// Sends one stanza through the layers to the client.
    pub async fn send(&mut self, stanza: Element) -> std::io::Result<()> {
        self.send_all(vec![stanza]).await
    }

    /// Sends stanzas through the layers, then writes and flushes once.
    pub async fn send_all(&mut self, stanzas: Vec<Element>) -> std::io::Result<()> {
        let passed = self.filter(stanzas, 0);
        self.write(passed).await
    }

    /// Asks every layer for stanzas it released and sends them on through the layers after it.
    pub async fn release(&mut self) -> std::io::Result<()> {
        let mut out = Vec::new();
        for i in 0..self.layers.len() {
            let mut released = Vec::new();
            self.layers[i].1.release(&mut released);
            if !released.is_empty() {
                out.extend(self.filter(released, i + 1));
            }
        }
        self.write(out).await
    }

    /// Writes something that is not a stanza (a nonza such as a stream management ack): it
    /// passes no layer and is not counted.
    pub async fn send_nonza(&mut self, xml: &str) -> std::io::Result<()> {
        self.writer.write_all(xml.as_bytes()).await?;
        self.writer.flush().await
    }

    /// Shows a stanza from the client to every layer (an idle session has none: a no-op).
    pub fn received(&mut self, stanza: &Element) {
        for (_, layer) in &mut self.layers {
            layer.received(stanza);
        }
    }

    /// Puts a new connection's write half in place of the old one (a resumed session), or a
    /// sink while the session waits detached; returns the old one.
    pub fn replace_writer(
        &mut self,
        writer: Box<dyn AsyncWrite + Send + Unpin>,
    ) -> Box<dyn AsyncWrite + Send + Unpin> {
        std::mem::replace(&mut self.writer, writer)
    }

    /// Installs a layer; layers with a higher priority see stanzas first.
    pub fn install_layer(&mut self, priority: i16, layer: Box<dyn OutboundLayer>) {
        let at = self
            .layers
            .iter()
            .position(|(p, _)| *p < priority)
            .unwrap_or(self.layers.len());
        self.layers.insert(at, (priority, layer));
    }

    pub fn layer_mut<T: OutboundLayer>(&mut self) -> Option<&mut T> {
        self.layers
            .iter_mut()
            .find_map(|(_, l)| l.as_any_mut().downcast_mut::<T>())
    }

    /// Removes a layer (e.g. to carry a hibernating session's unacknowledged stanzas away).
    pub fn take_layer<T: OutboundLayer>(&mut self) -> Option<Box<dyn OutboundLayer>> {
        let i = self
            .layers
            .iter_mut()
            .position(|(_, l)| l.as_any_mut().is::<T>())?;
        Some(self.layers.remove(i).1)
    }

    /// The raw writer, for the stream's closing words.
    pub fn writer(&mut self) -> &mut (dyn AsyncWrite + Send + Unpin) {
        &mut *self.writer
    }

    fn filter(&mut self, mut stanzas: Vec<Element>, from_layer: usize) -> Vec<Element> {
        for (_, layer) in self.layers.iter_mut().skip(from_layer) {
            let mut next = Vec::with_capacity(stanzas.len());
            for s in stanzas {
                layer.outgoing(s, &mut next);
            }
            stanzas = next;
        }
        stanzas
    }

    async fn write(&mut self, stanzas: Vec<Element>) -> std::io::Result<()> {
        if stanzas.is_empty() {
            return Ok(());
        }
        // A fresh buffer per write, gone when the write is: kept between writes it cost every
        // idle session the size of the largest batch it had received (about 250 bytes on
        // average with 1,000 idle sessions), for one allocation per batch saved.
        let mut buf = String::new();
        for s in &stanzas {
            s.write_to(&mut buf, ns::CLIENT);
        }
        self.writer.write_all(buf.as_bytes()).await?;
        self.writer.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds every stanza until released, and counts what it let through: the shape of CSI
    /// and stream management layers.
    #[derive(Default)]
    struct HoldAll {
        held: Vec<Element>,
        passed: u32,
    }

    impl OutboundLayer for HoldAll {
        fn outgoing(&mut self, stanza: Element, _pass: &mut Vec<Element>) {
            self.held.push(stanza);
        }
        fn release(&mut self, pass: &mut Vec<Element>) {
            self.passed += self.held.len() as u32;
            pass.append(&mut self.held);
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    }

    #[tokio::test]
    async fn layers_hold_and_release_in_order() {
        let (client, server) = tokio::io::duplex(4096);
        let mut local = SessionLocal::new(Box::new(server));
        local.install_layer(0, Box::<HoldAll>::default());
        for i in 0..3 {
            let m = Element::new("message", ns::CLIENT).with_attr("id", i.to_string());
            local.send(m).await.unwrap();
        }
        assert_eq!(local.layer_mut::<HoldAll>().unwrap().held.len(), 3);
        local.release().await.unwrap();
        assert_eq!(local.layer_mut::<HoldAll>().unwrap().passed, 3);
        drop(local);
        let mut text = String::new();
        use tokio::io::AsyncReadExt;
        let mut client = client;
        client.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "<message id='0'/><message id='1'/><message id='2'/>");
    }
}
