//! Fuzzes the reading of Raspberry Pi Imager's cloud-init files: the input is split at the first NUL
//! into `user-data` and `network-config`. Reading never panics, and the preseed made from them always
//! reads back as a valid `hearth-setup.toml`.
#![no_main]

use hearthd::setup::imager::parse_cloud_init;
use hearthd::setup::Preseed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (user, network) = text.split_once('\0').unwrap_or((&text, ""));
    let mut settings = parse_cloud_init(Some((user, "user-data")), Some((network, "network-config")));
    let preseed = settings.to_preseed_toml("cloud-init");
    if let Err(e) = Preseed::parse(&preseed, "generated") {
        panic!("the generated preseed does not read back: {e}\n{preseed}");
    }
});
