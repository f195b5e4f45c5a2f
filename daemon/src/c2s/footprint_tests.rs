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
