//! The hardened incremental XML stream reader.
//!
//! quick-xml parses; this layer enforces what RFC 6120 §11 and a 512 MB board need: no DTDs,
//! entity declarations, comments or processing instructions (`restricted-xml`), and bounds on
//! stanza size, depth, attribute count and name length (`policy-violation`). quick-xml has no
//! per-token size limit, so the socket is wrapped in [`LimitedReader`], which counts the bytes of
//! the stanza in progress and fails the read once the limit is passed: a 12 MiB text node never
//! reaches memory. The same counter tells how long a stanza has been arriving, so a client that
//! trickles one byte a second can be cut off by its session (see [`ReadProgress`]).

use super::idle_buf::{IdleFreeBufReader, READ_CHUNK};
use super::{ns, Element, Node};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, ReadBuf};

/// Most bytes read ahead of the parser: TLS already holds a whole record's plaintext (rustls),
/// so this only feeds the parser, and 1 KiB takes most stanzas in one go. The buffer exists
/// only while bytes wait to be parsed (see [`IdleFreeBufReader`]); an idle session holds none.
const READ_BUFFER: usize = READ_CHUNK;

#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attributes: usize,
    pub max_name_bytes: usize,
}

#[derive(Debug)]
pub enum XmlEvent {
    /// `<stream:stream …>`; attributes as sent (incl. `xmlns`), element namespace resolved.
    StreamStart(Element),
    /// One complete top-level element.
    Stanza(Element),
    /// `</stream:stream>`.
    StreamEnd,
}

#[derive(Debug)]
pub enum XmlError {
    /// Syntax errors, bad UTF-8, unknown entities: `not-well-formed`.
    NotWellFormed(String),
    /// DTDs, comments, processing instructions: `restricted-xml`.
    Restricted(&'static str),
    /// A limit was passed: `policy-violation`.
    Policy(String),
    /// An unbound prefix or a wrong stream namespace: `invalid-namespace`.
    InvalidNamespace(String),
    /// The peer closed the connection (or it broke) without closing the stream.
    Closed(Option<io::Error>),
}

impl XmlError {
    /// The RFC 6120 §4.9.3 stream error condition, or None when there is nobody to tell.
    pub fn condition(&self) -> Option<&'static str> {
        match self {
            XmlError::NotWellFormed(_) => Some("not-well-formed"),
            XmlError::Restricted(_) => Some("restricted-xml"),
            XmlError::Policy(_) => Some("policy-violation"),
            XmlError::InvalidNamespace(_) => Some("invalid-namespace"),
            XmlError::Closed(_) => None,
        }
    }
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XmlError::NotWellFormed(s) => write!(f, "not well-formed XML: {s}"),
            XmlError::Restricted(s) => write!(f, "restricted XML: {s}"),
            XmlError::Policy(s) => write!(f, "policy violation: {s}"),
            XmlError::InvalidNamespace(s) => write!(f, "invalid namespace: {s}"),
            XmlError::Closed(None) => f.write_str("connection closed"),
            XmlError::Closed(Some(e)) => write!(f, "connection lost: {e}"),
        }
    }
}

fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    // +1 so that 0 can mean "never".
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What the socket has delivered, shared between the reading task and the session's timers.
#[derive(Debug, Default)]
pub struct ReadProgress {
    /// Bytes of the stanza in progress (whitespace between stanzas does not count).
    bytes: AtomicUsize,
    /// When the stanza in progress started arriving, in `clock_ms`; 0 when none is.
    partial_since: AtomicU64,
    /// When the last byte of any kind arrived.
    last_byte: AtomicU64,
    exceeded: AtomicBool,
}

impl ReadProgress {
    fn reset(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        self.partial_since.store(0, Ordering::Relaxed);
    }

    /// How long the stanza in progress has been arriving, if one is.
    pub fn partial_for(&self) -> Option<std::time::Duration> {
        match self.partial_since.load(Ordering::Relaxed) {
            0 => None,
            t => Some(std::time::Duration::from_millis(
                clock_ms().saturating_sub(t),
            )),
        }
    }

    /// Time since the peer last sent anything (whitespace keepalives included).
    pub fn silent_for(&self) -> std::time::Duration {
        match self.last_byte.load(Ordering::Relaxed) {
            0 => std::time::Duration::ZERO,
            t => std::time::Duration::from_millis(clock_ms().saturating_sub(t)),
        }
    }

    fn mark_alive(&self) {
        self.last_byte.store(clock_ms(), Ordering::Relaxed);
    }
}

/// Counts stanza bytes as they come off the socket and fails the read past the limit.
struct LimitedReader<R> {
    inner: R,
    progress: Arc<ReadProgress>,
    limit: usize,
}

impl<R: AsyncRead + Unpin> AsyncRead for LimitedReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let p = &this.progress;
                p.mark_alive();
                let mut counted = fresh.len();
                if p.bytes.load(Ordering::Relaxed) == 0 {
                    // Whitespace keepalives between stanzas are not a stanza in progress.
                    counted -= fresh.iter().take_while(|b| b.is_ascii_whitespace()).count();
                    if counted > 0 {
                        p.partial_since.store(clock_ms(), Ordering::Relaxed);
                    }
                }
                let total = p.bytes.fetch_add(counted, Ordering::Relaxed) + counted;
                if total > this.limit {
                    p.exceeded.store(true, Ordering::Relaxed);
                    return Poll::Ready(Err(io::Error::other("stanza too large")));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

enum State {
    ExpectHeader,
    InStream,
}

/// Turns a byte stream into stream headers and stanzas, within limits.
pub struct XmlReader<R> {
    reader: NsReader<IdleFreeBufReader<LimitedReader<R>>>,
    buf: Vec<u8>,
    stack: Vec<Element>,
    state: State,
    limits: XmlLimits,
    progress: Arc<ReadProgress>,
}

fn new_ns_reader<B: tokio::io::AsyncBufRead + Unpin>(inner: B) -> NsReader<B> {
    let mut reader = NsReader::from_reader(inner);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.check_end_names = true;
    config.check_comments = true;
    reader
}

impl<R: AsyncRead + Unpin> XmlReader<R> {
    pub fn new(inner: R, limits: XmlLimits) -> XmlReader<R> {
        let progress = Arc::new(ReadProgress::default());
        // Slack of one read buffer: the count includes bytes read ahead of the current stanza.
        let limited = LimitedReader {
            inner,
            progress: progress.clone(),
            limit: limits.max_stanza_bytes + READ_BUFFER,
        };
        XmlReader {
            reader: new_ns_reader(IdleFreeBufReader::new(limited)),
            buf: Vec::new(),
            stack: Vec::new(),
            state: State::ExpectHeader,
            limits,
            progress,
        }
    }

    /// Heap bytes the reader's buffers hold right now (not the parser's namespace table): zero
    /// between stanzas, which is what an idle session's footprint test checks.
    pub fn buffered_bytes(&self) -> usize {
        self.reader.get_ref().held()
            + self.buf.capacity()
            + self.stack.capacity() * std::mem::size_of::<Element>()
    }

    pub fn progress(&self) -> Arc<ReadProgress> {
        self.progress.clone()
    }

    /// After SASL success the client opens a new stream (RFC 6120 §6.4.6): a fresh parser over
    /// the same buffered reader, so bytes the client already sent are kept.
    pub fn restart(self) -> XmlReader<R> {
        let inner = self.reader.into_inner();
        XmlReader {
            reader: new_ns_reader(inner),
            buf: Vec::new(),
            stack: Vec::new(),
            state: State::ExpectHeader,
            limits: self.limits,
            progress: self.progress,
        }
    }

    /// Reads and throws away what the peer still sends, for at most `max` or 16 MiB. Called
    /// after a stream error so that closing the socket with unread input (which makes the kernel
    /// send a TCP reset) does not destroy the error before the peer reads it.
    pub async fn discard_input(&mut self, max: std::time::Duration) {
        use tokio::io::AsyncReadExt;
        let inner = &mut self.reader.get_mut().get_mut().inner;
        let mut scratch = [0u8; 4096];
        let mut total = 0usize;
        let _ = tokio::time::timeout(max, async {
            while total < 16 << 20 {
                match inner.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
    }

    /// Gives the socket back (for STARTTLS). Anything buffered is dropped: a client may not
    /// send before `<proceed/>`.
    pub fn into_inner(self) -> R {
        self.reader.into_inner().into_inner().inner
    }

    /// The next header, stanza or stream end. Not cancel-safe: a caller that gives up on it
    /// must also give up on the stream.
    pub async fn next(&mut self) -> Result<XmlEvent, XmlError> {
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            let outcome = self.step(&mut buf).await;
            if matches!(outcome, Some(Ok(XmlEvent::Stanza(_)))) {
                // Between stanzas the reader waits, maybe for hours: it holds no buffer then
                // (the event buffer and the element stack are allocated again by the next one).
                buf = Vec::new();
                self.stack = Vec::new();
            }
            self.buf = buf;
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// Reads one parser event; `None` when it did not complete anything yet.
    async fn step(&mut self, buf: &mut Vec<u8>) -> Option<Result<XmlEvent, XmlError>> {
        self.step_inner(buf).await.transpose()
    }

    async fn step_inner(&mut self, buf: &mut Vec<u8>) -> Result<Option<XmlEvent>, XmlError> {
        {
            let read = self.reader.read_resolved_event_into_async(buf).await;
            let (resolved, event) = match read {
                Ok(ok) => ok,
                Err(quick_xml::Error::Io(e)) => {
                    if self.progress.exceeded.load(Ordering::Relaxed) {
                        return Err(XmlError::Policy(format!(
                            "stanza larger than {} bytes",
                            self.limits.max_stanza_bytes
                        )));
                    }
                    return Err(XmlError::Closed(Some(io::Error::new(
                        e.kind(),
                        e.to_string(),
                    ))));
                }
                Err(e) => return Err(XmlError::NotWellFormed(e.to_string())),
            };
            let ns = match resolved {
                ResolveResult::Bound(n) => Some(String::from_utf8_lossy(n.as_ref()).into_owned()),
                ResolveResult::Unbound => None,
                ResolveResult::Unknown(p) => {
                    return Err(XmlError::InvalidNamespace(format!(
                        "prefix {:?} is not bound",
                        String::from_utf8_lossy(&p)
                    )))
                }
            };
            match event {
                Event::Start(start) => self.on_start(&start, ns),
                Event::End(_) => Ok(self.on_end()),
                Event::Text(t) => {
                    let text = t
                        .unescape()
                        .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
                    self.on_text(&text).map(|_| None)
                }
                Event::CData(c) => {
                    let text = std::str::from_utf8(&c)
                        .map_err(|e| XmlError::NotWellFormed(e.to_string()))?
                        .to_string();
                    self.on_text(&text).map(|_| None)
                }
                Event::Decl(_) if matches!(self.state, State::ExpectHeader) => Ok(None),
                Event::Decl(_) => Err(XmlError::Restricted("XML declaration inside the stream")),
                Event::DocType(_) => Err(XmlError::Restricted(
                    "document type declarations are not allowed",
                )),
                Event::Comment(_) => Err(XmlError::Restricted("comments are not allowed")),
                Event::PI(_) => Err(XmlError::Restricted(
                    "processing instructions are not allowed",
                )),
                Event::Empty(_) => Err(XmlError::NotWellFormed("unexpected empty element".into())),
                Event::Eof => Err(XmlError::Closed(None)),
            }
        }
    }

    fn on_start(
        &mut self,
        start: &BytesStart<'_>,
        ns: Option<String>,
    ) -> Result<Option<XmlEvent>, XmlError> {
        let depth = self.stack.len();
        if depth >= self.limits.max_depth {
            return Err(XmlError::Policy(format!(
                "elements nested deeper than {}",
                self.limits.max_depth
            )));
        }
        let qname = start.name();
        if qname.as_ref().len() > self.limits.max_name_bytes {
            return Err(XmlError::Policy("element name too long".into()));
        }
        let local = std::str::from_utf8(start.local_name().as_ref())
            .map_err(|_| XmlError::NotWellFormed("element name is not UTF-8".into()))?
            .to_string();
        let mut el = Element::new(&local, ns.as_deref().unwrap_or(""));
        let is_header = matches!(self.state, State::ExpectHeader);
        for attr in start.attributes() {
            let attr = attr.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
            if el.attrs.len() >= self.limits.max_attributes {
                return Err(XmlError::Policy(format!(
                    "more than {} attributes",
                    self.limits.max_attributes
                )));
            }
            let key = attr.key.as_ref();
            if key.len() > self.limits.max_name_bytes {
                return Err(XmlError::Policy("attribute name too long".into()));
            }
            let key = std::str::from_utf8(key)
                .map_err(|_| XmlError::NotWellFormed("attribute name is not UTF-8".into()))?;
            // Namespace declarations are resolved already; keep the default one on the header
            // (it tells jabber:client from jabber:server) and prefixed ones (attributes may use them).
            if key == "xmlns" && !is_header {
                continue;
            }
            let value = attr
                .unescape_value()
                .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
            check_chars(&value)?;
            el.attrs.push((key.to_string(), value.into_owned()));
        }
        if is_header {
            if el.name != "stream" || el.ns != ns::STREAMS {
                return Err(XmlError::InvalidNamespace(format!(
                    "expected <stream:stream>, got <{}>",
                    el.name
                )));
            }
            self.state = State::InStream;
            self.progress.reset();
            return Ok(Some(XmlEvent::StreamStart(el)));
        }
        self.stack.push(el);
        Ok(None)
    }

    fn on_end(&mut self) -> Option<XmlEvent> {
        match self.stack.pop() {
            None => Some(XmlEvent::StreamEnd),
            Some(el) => match self.stack.last_mut() {
                Some(parent) => {
                    parent.children.push(Node::Element(el));
                    None
                }
                None => {
                    self.progress.reset();
                    Some(XmlEvent::Stanza(el))
                }
            },
        }
    }

    fn on_text(&mut self, text: &str) -> Result<(), XmlError> {
        check_chars(text)?;
        match self.stack.last_mut() {
            Some(el) => {
                match el.children.last_mut() {
                    Some(Node::Text(t)) => t.push_str(text),
                    _ => el.children.push(Node::Text(text.to_string())),
                }
                Ok(())
            }
            None if text.chars().all(|c| c.is_ascii_whitespace()) => Ok(()),
            None => Err(XmlError::NotWellFormed("text outside of a stanza".into())),
        }
    }
}

/// XML 1.0 §2.2: control characters other than tab, newline and carriage return are not
/// characters of a document, neither raw nor as character references.
fn check_chars(s: &str) -> Result<(), XmlError> {
    let bad = s.chars().any(|c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    });
    if bad {
        return Err(XmlError::NotWellFormed("control character in text".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: XmlLimits = XmlLimits {
        max_stanza_bytes: 64 * 1024,
        max_depth: 16,
        max_attributes: 8,
        max_name_bytes: 64,
    };
    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>";

    async fn events(input: &str) -> Vec<Result<String, String>> {
        let mut r = XmlReader::new(input.as_bytes(), LIMITS);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(XmlEvent::StreamStart(h)) => {
                    out.push(Ok(format!("start to={}", h.attr("to").unwrap_or(""))))
                }
                Ok(XmlEvent::Stanza(s)) => out.push(Ok(s.to_xml("jabber:client"))),
                Ok(XmlEvent::StreamEnd) => {
                    out.push(Ok("end".into()));
                    break;
                }
                Err(XmlError::Closed(None)) => break,
                Err(e) => {
                    out.push(Err(e.condition().unwrap_or("closed").to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn reads_header_stanzas_and_end() {
        let input = format!(
            "{HEADER} <message to='a@b'><body>hi &amp; bye</body><x:y xmlns:x='urn:x' x:k='v'/></message>\n\
             <iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq></stream:stream>"
        );
        let ev = events(&input).await;
        assert_eq!(ev[0], Ok("start to=example.test".into()));
        assert_eq!(
            ev[1],
            Ok("<message to='a@b'><body>hi &amp; bye</body><y xmlns='urn:x' xmlns:x='urn:x' x:k='v'/></message>".into())
        );
        assert_eq!(
            ev[2],
            Ok("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>".into())
        );
        assert_eq!(ev[3], Ok("end".into()));
    }

    #[tokio::test]
    async fn refuses_restricted_xml() {
        let doctype = "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><stream:stream/>";
        assert_eq!(
            events(doctype).await.last().unwrap(),
            &Err("restricted-xml".into())
        );
        let comment = format!("{HEADER}<!-- hi --><message/>");
        assert_eq!(
            events(&comment).await.last().unwrap(),
            &Err("restricted-xml".into())
        );
        let pi = format!("{HEADER}<?foo bar?>");
        assert_eq!(
            events(&pi).await.last().unwrap(),
            &Err("restricted-xml".into())
        );
        let entity = format!("{HEADER}<message><body>&lol;</body></message>");
        assert_eq!(
            events(&entity).await.last().unwrap(),
            &Err("not-well-formed".into())
        );
    }

    #[tokio::test]
    async fn enforces_limits() {
        let big = format!(
            "{HEADER}<message><body>{}</body></message>",
            "a".repeat(200 * 1024)
        );
        assert_eq!(
            events(&big).await.last().unwrap(),
            &Err("policy-violation".into())
        );
        let deep = format!("{HEADER}{}", "<a>".repeat(100));
        assert_eq!(
            events(&deep).await.last().unwrap(),
            &Err("policy-violation".into())
        );
        let attrs: String = (0..20).map(|i| format!(" a{i}='x'")).collect();
        let many = format!("{HEADER}<message{attrs}/>");
        assert_eq!(
            events(&many).await.last().unwrap(),
            &Err("policy-violation".into())
        );
        let long = format!("{HEADER}<{}/>", "n".repeat(100));
        assert_eq!(
            events(&long).await.last().unwrap(),
            &Err("policy-violation".into())
        );
    }

    #[tokio::test]
    async fn refuses_malformed_xml() {
        for bad in [
            "<message></iq>",
            "<message a='1' a='2'/>",
            "<x:message/>",
            "text<message/>",
            "<message>\u{1}</message>",
            "<message a='&#2;'/>",
        ] {
            let ev = events(&format!("{HEADER}{bad}")).await;
            assert!(matches!(ev.last().unwrap(), Err(_)), "{bad}: {ev:?}");
        }
        let wrong_root = "<stream xmlns='jabber:client'>";
        assert_eq!(
            events(wrong_root).await.last().unwrap(),
            &Err("invalid-namespace".into())
        );
    }

    #[tokio::test]
    async fn restart_keeps_buffered_bytes() {
        let input = format!("{HEADER}<auth/>{HEADER}<iq id='b'/>");
        let mut r = XmlReader::new(input.as_bytes(), LIMITS);
        assert!(matches!(r.next().await, Ok(XmlEvent::StreamStart(_))));
        assert!(matches!(r.next().await, Ok(XmlEvent::Stanza(_))));
        let mut r = r.restart();
        assert!(matches!(r.next().await, Ok(XmlEvent::StreamStart(_))));
        match r.next().await {
            Ok(XmlEvent::Stanza(s)) => assert_eq!(s.attr("id"), Some("b")),
            other => panic!("{other:?}"),
        }
    }
}
