//! Fuzzes the archive query parser (XEP-0313 form + XEP-0059 set) and the XEP-0082 time parser
//! it uses: whatever a client sends inside `<query xmlns='urn:xmpp:mam:2'>`, the answer is a
//! `Query` or a stanza error, never a panic.
#![no_main]

use hearthd::modules::mam::form::{parse_query, MAX_IDS, MAX_PAGE};
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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = hearthd::timefmt::parse_xep0082(text);
    let xml = format!("<query xmlns='urn:xmpp:mam:2'>{text}</query>");
    // The same reader that parses client streams (bounded); malformed XML ends here.
    let Some(query) = runtime().block_on(hearthd::xml::parse_fragment(&xml)) else {
        return;
    };
    if let Ok(q) = parse_query(&query) {
        assert!(q.max <= MAX_PAGE);
        assert!(q.ids.len() <= MAX_IDS);
    }
});
