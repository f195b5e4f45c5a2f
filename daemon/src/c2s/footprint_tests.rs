//! What an idle session's tasks reserve. A connection's task holds its future for the whole
//! session, sized for the largest state it can be in; the negotiation and the handling of one
//! stanza are boxed so that their KiB of state is gone while a session just waits. These
//! bounds (about twice today's debug-build sizes) catch a change that inlines them again.

use super::session::{self, Bound};
use crate::harness::Harness;
use crate::jid::Jid;
use crate::xml::XmlReader;

#[tokio::test]
async fn an_idle_sessions_futures_stay_small() {
    let h = Harness::new().await;
    let limits = super::xml_limits(&h.server.config.limits);

    let (_client, server_side) = tokio::io::duplex(64);
    let (srv_read, srv_write) = tokio::io::split(server_side);
    let bound = Bound {
        reader: XmlReader::new(srv_read, limits),
        writer: Box::new(srv_write),
        jid: Jid::parse("alice@example.test/phone").expect("jid"),
        peer: "127.0.0.1:5222".parse().expect("literal"),
    };
    let run = session::run(h.server.clone(), bound);
    let run_size = std::mem::size_of_val(&run);
    drop(run);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let tcp = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let serve = super::serve(
        h.server.clone(),
        tcp,
        "127.0.0.1:5222".parse().expect("literal"),
        true,
    );
    let serve_size = std::mem::size_of_val(&serve);
    drop(serve);

    assert!(run_size <= 3 * 1024, "session future: {run_size} bytes");
    assert!(
        serve_size <= 4 * 1024,
        "connection future: {serve_size} bytes"
    );
}

/// Between stanzas a connection's parser holds no buffer: not the read-ahead bytes, not the
/// event buffer, not the element stack (each was a KiB or so kept for the session's life).
#[tokio::test]
async fn an_idle_parser_holds_no_buffers() {
    use crate::xml::XmlEvent;
    use tokio::io::AsyncWriteExt;
    let limits = crate::xml::XmlLimits {
        max_stanza_bytes: 64 * 1024,
        max_depth: 16,
        max_attributes: 16,
        max_name_bytes: 64,
    };
    let (mut client, server_side) = tokio::io::duplex(64 * 1024);
    let mut reader = XmlReader::new(server_side, limits);
    let body = "x".repeat(3000);
    let input = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
         to='example.test' version='1.0'><message to='bob@example.test'><body>{body}</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    );
    client.write_all(input.as_bytes()).await.expect("write");
    assert!(matches!(reader.next().await, Ok(XmlEvent::StreamStart(_))));
    match reader.next().await {
        Ok(XmlEvent::Stanza(m)) => assert_eq!(m.name, "message"),
        other => panic!("expected the message, got {other:?}"),
    }
    assert_eq!(reader.buffered_bytes(), 0, "buffers kept after a stanza");
    // The next read finds nothing yet: waiting must not allocate either.
    let waited = tokio::time::timeout(std::time::Duration::from_millis(20), reader.next()).await;
    assert!(waited.is_err(), "no stanza was sent");
    assert_eq!(reader.buffered_bytes(), 0, "buffers taken while waiting");
}
