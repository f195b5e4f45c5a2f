//! Fuzzes the PEP form parser (XEP-0060 publish-options and node configuration) and the
//! XEP-0115 hash of a client's disco#info answer: whatever a client sends, the answer is settings
//! or a form error, never a panic, and `max_items` never passes the server's limit.
#![no_main]

use hearthd::modules::pep::form::{self, NodeConfig, Setting, NODE_CONFIG, PUBLISH_OPTIONS};
use hearthd::modules::pep::interest;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const LIMIT: u32 = 64;

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
    let xml = format!("<x xmlns='jabber:x:data' type='submit'>{text}</x>");
    // The same bounded reader that parses client streams; malformed XML ends here.
    let Some(x) = runtime().block_on(hearthd::xml::parse_fragment(&xml)) else {
        return;
    };
    for form_type in [PUBLISH_OPTIONS, NODE_CONFIG] {
        if let Ok(settings) = form::parse(&x, form_type, LIMIT) {
            let mut c = NodeConfig::default_pep();
            for s in settings {
                if let Setting::MaxItems(n) = s {
                    assert!(n >= 1 && n <= LIMIT, "max_items {n}");
                }
                s.apply(&mut c);
                assert!(s.holds(&c));
            }
            // What the owner is shown parses back to the same configuration.
            let mut shown = form::render(&c);
            shown.set_attr("type", "submit");
            let mut back = NodeConfig::default_pep();
            for s in form::parse(&shown, NODE_CONFIG, LIMIT).expect("our own form parses") {
                s.apply(&mut back);
            }
            assert_eq!(back, c);
        }
    }
    let _ = interest::ver_of(&x);
    let _ = interest::notify_nodes(&x);
});
