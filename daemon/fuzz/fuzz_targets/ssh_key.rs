//! Fuzzes the SSH public key check shared by the preseed's `[ssh] authorized_keys` and the admin
//! page: whatever a person pastes, the answer is a key or a message, never a panic; and a key that
//! was accepted comes back unchanged from the line we would write to the keys file.
#![no_main]

use hearthd::setup::ssh_keys::AuthorizedKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = AuthorizedKey::parse(text) {
        let line = key.line();
        assert!(!line.contains('\n'), "one key, one line: {line:?}");
        let again = AuthorizedKey::parse(&line).expect("a line we wrote parses again");
        assert!(again.same_key(&key));
        assert_eq!(again.line(), line);
        let _ = key.fingerprint();
    }
});
