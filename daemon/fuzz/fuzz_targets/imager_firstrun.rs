//! Fuzzes the reading of Raspberry Pi Imager's `firstrun.sh` (as data, never run): whatever is on the
//! card, reading it never panics, and the preseed made from it always reads back as a valid
//! `hearth-setup.toml` (the first-boot script applies that file).
#![no_main]

use hearthd::setup::imager::parse_firstrun;
use hearthd::setup::Preseed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut settings = parse_firstrun(&text, "firstrun.sh");
    let preseed = settings.to_preseed_toml("firstrun.sh");
    if let Err(e) = Preseed::parse(&preseed, "generated") {
        panic!("the generated preseed does not read back: {e}\n{preseed}");
    }
});
