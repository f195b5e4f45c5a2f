//! Fuzzes what a remote server sends on a federation stream: arbitrary bytes after a
//! server-to-server stream header go through the same bounded reader, and every element through
//! the dialback parser (XEP-0220) and the stream-namespace renaming done before routing. Either
//! yields an answer or an error, never a panic; a parsed `<db:result/>` request always carries
//! its key.
#![no_main]

use hearthd::s2s::dialback::{parse, Dialback};
use hearthd::s2s::rename_stream_ns;
use hearthd::xml::{ns, XmlEvent, XmlLimits, XmlReader};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='remote.example' to='hearth.example' version='1.0'>";

fuzz_target!(|data: &[u8]| {
    let mut stream = HEADER.to_vec();
    stream.extend_from_slice(data);
    let limits = XmlLimits {
        max_stanza_bytes: 64 * 1024,
        max_depth: 32,
        max_attributes: 32,
        max_name_bytes: 256,
    };
    runtime().block_on(async {
        let mut reader = XmlReader::new(stream.as_slice(), limits);
        for _ in 0..64 {
            match reader.next().await {
                Ok(XmlEvent::Stanza(mut el)) => {
                    if let Some(Ok(Dialback::ResultRequest { key, .. })) = parse(&el) {
                        assert!(!key.is_empty());
                    }
                    rename_stream_ns(&mut el, ns::SERVER, ns::CLIENT);
                    let _ = el.to_xml(ns::CLIENT);
                }
                Ok(XmlEvent::StreamStart(_)) => {}
                Ok(XmlEvent::StreamEnd) | Err(_) => break,
            }
        }
    });
});
