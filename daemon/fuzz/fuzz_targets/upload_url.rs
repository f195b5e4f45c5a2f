//! Fuzzes what hearth-web reads from a stranger's request line before any check: the upload path
//! (`/upload/<token>/<escaped name>`), the `v2` query parameter, percent-escaping and file-name
//! cleaning (`hearthd::modules::upload::signed`). Never a panic; whatever parses is a well-formed
//! token and a clean name that prints back to the same path.
#![no_main]

use hearthd::modules::upload::signed::{
    clean_name, escape, is_token, parse_path, unescape, v2_from_query, valid_content_type,
    MAX_NAME_BYTES,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = parse_path(text, "/upload/") {
        assert!(is_token(&p.token));
        assert_eq!(clean_name(&p.name), p.name);
        assert_eq!(parse_path(&format!("/upload/{}", p.url_part()), "/upload/"), Ok(p));
    }
    if let Some(mac) = v2_from_query(text) {
        assert!(mac.len() == 64 && mac.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert_eq!(unescape(&escape(text)).as_deref(), Some(text));
    let _ = unescape(text);
    let name = clean_name(text);
    assert!(!name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.contains('/'));
    assert_eq!(clean_name(&name), name);
    if valid_content_type(text) {
        assert!(!text.contains(['\r', '\n', ';', ' ', '"']));
    }
});
