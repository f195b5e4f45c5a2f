//! Fuzzes hearth-image's readers of the build host's apt sources (one-line `sources.list` and deb822
//! `.sources`), which pick the mirror a build fetches from: any text gives sources or nothing, never a
//! panic, and every source found has a URI and at least one suite; the pick names only found URIs.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../../src/mirror.rs"]
mod mirror;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut all = mirror::parse_one_line(text);
    all.extend(mirror::parse_deb822(text));
    for s in &all {
        assert!(!s.uri.is_empty(), "{s:?}");
        assert!(!s.suites.is_empty(), "{s:?}");
    }
    let picked = mirror::pick(&all);
    for uri in [&picked.archive, &picked.security].into_iter().flatten() {
        // pick() drops a trailing '/' and never returns a URI that names no place.
        assert!(!uri.is_empty() && !uri.ends_with(':'), "{uri:?}");
        assert!(
            all.iter().any(|s| s.uri.trim_end_matches('/') == uri),
            "{uri} was not among {all:?}"
        );
    }
});
