//! Fuzzes the removal of Imager's `systemd.run=` additions from `cmdline.txt`: the result holds none
//! of them, keeps every other word in order, and removing again changes nothing.
#![no_main]

use hearthd::setup::imager::strip_cmdline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(clean) = strip_cmdline(text) {
        assert!(clean.ends_with('\n') && clean.lines().count() <= 1, "{clean:?}");
        assert!(!clean.split_whitespace().any(|w| w.starts_with("systemd.run=")));
        assert_eq!(strip_cmdline(&clean), None, "{clean:?}");
        let first = text.lines().next().unwrap_or("");
        let mut kept = first.split_whitespace();
        for w in clean.split_whitespace() {
            assert!(kept.any(|k| k == w), "{w:?} was not in {first:?} in this order");
        }
    }
});
