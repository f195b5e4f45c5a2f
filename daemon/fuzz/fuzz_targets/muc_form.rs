//! Fuzzes the group chat room configuration form (XEP-0045 `muc#roomconfig`): whatever an owner
//! submits, the answer is settings within the server's limits or an error, never a panic, and
//! the form an owner is shown for any accepted settings parses back to the same settings.
#![no_main]

use hearthd::modules::muc::form::{self, FormLimits};
use hearthd::modules::muc::room::RoomConfig;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const LIMITS: FormLimits = FormLimits {
    max_users: 100,
    max_history: 50,
};

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
    let Ok(c) = form::parse(&x, &RoomConfig::default(), LIMITS) else {
        return;
    };
    assert!(c.max_users >= 1 && c.max_users <= LIMITS.max_users, "{c:?}");
    assert!(c.history_length <= LIMITS.max_history, "{c:?}");
    let mut shown = form::render(&c, LIMITS);
    shown.set_attr("type", "submit");
    let back = form::parse(&shown, &RoomConfig::default(), LIMITS).expect("our own form parses");
    assert_eq!(back, c);
});
