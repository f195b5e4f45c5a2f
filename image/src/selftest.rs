//! The guest's self-test report (`image/overlay/usr/lib/hearth/selftest`, run by boot tests): reading its
//! lines from the serial console and deciding what in them is wrong.

use std::path::Path;

use crate::disk;

/// The text after `prefix` on every console line that contains it.
pub fn console_lines(console: &Path, prefix: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).into_owned();
    text.lines()
        .filter_map(|l| {
            l.find(prefix)
                .map(|i| l[i + prefix.len()..].trim_end().to_string())
        })
        .collect()
}

/// What the self-test report must show besides the basics.
pub struct Expect {
    /// Booted without a preseed: hearthd waits for the wizard, which must run and have a setup code.
    pub wizard: bool,
    /// The preseed configured this Wi-Fi network.
    pub wifi_ssid: Option<String>,
    /// The preseed gave an SSH key: sshd must listen on 22. Without one, nothing may listen there.
    pub ssh_key: bool,
}

/// Whether a preseed's text gives an SSH public key (an uncommented `"ssh-…"`, `"ecdsa-…"` or `"sk-…"`
/// string, as `[ssh] authorized_keys` holds); the guest's own parser checks the keys themselves.
pub fn preseed_has_ssh_key(text: &str) -> bool {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .any(|l| {
            ["\"ssh-", "\"ecdsa-", "\"sk-"]
                .iter()
                .any(|k| l.contains(k))
        })
}

/// Prints the guest's report and returns what is wrong with it.
pub fn judge(report: &[String], console: &Path, expect: &Expect) -> Vec<String> {
    let mut bad = vec![];
    let get = |key: &str| {
        report
            .iter()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    for l in report {
        eprintln!("  guest: {l}");
    }
    let disk: u64 = get("disk-bytes").parse().unwrap_or(0);
    let rootfs: u64 = get("rootfs-bytes").parse().unwrap_or(0);
    // Grown: the root filesystem covers the disk minus the 4 MiB gap and the boot partition (and ext4 overhead).
    if disk == 0 || rootfs < disk / 100 * 85 - 300 * disk::MIB {
        bad.push(format!(
            "root filesystem not grown ({} MiB of a {} MiB disk)",
            rootfs / disk::MIB,
            disk / disk::MIB
        ));
    }
    // Reported by images since the initramfs checks the root (older ones print no root-fsck line).
    if get("root-fsck") == "none" {
        bad.push("the initramfs did not check the root filesystem (no fsck in it)".into());
    }
    if get("journal-max-use").is_empty() {
        bad.push("journald has no SystemMaxUse limit".into());
    }
    if expect.wizard {
        // Nothing is configured yet: hearthd waits for the wizard to write its config.
        if !get("hearth-web").contains("setup-code-file=yes") {
            bad.push(format!(
                "no SETUP-CODE.txt on the boot partition ({})",
                get("hearth-web")
            ));
        }
        if !console_lines(console, "hearth-firstboot: ")
            .iter()
            .any(|l| l.contains("setup code"))
        {
            bad.push("first boot did not tell the console about the setup code".into());
        }
    } else if !get("hearthd").starts_with("active user=hearth") {
        bad.push(format!(
            "hearthd is not running as user hearth ({})",
            get("hearthd")
        ));
    }
    // The box's coturn: its secret is made before setup in every case (0640, group hearth-admin, for
    // hearthd); once set up, setup points hearthd at it and coturn runs as turnserver on 3478.
    let coturn = get("coturn");
    if !coturn.contains("secret=640:hearth-admin") {
        bad.push(format!(
            "the TURN secret is missing or readable by the wrong users ({coturn:?})"
        ));
    }
    if !expect.wizard {
        let listening = coturn
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listening-3478="))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if !coturn.starts_with("active user=turnserver") || listening == 0 {
            bad.push(format!(
                "coturn is not running as turnserver on port 3478 ({coturn:?})"
            ));
        }
        if !coturn.contains("hearthd-turn=1") {
            bad.push(format!(
                "setup did not point hearthd at the box's coturn ({coturn:?})"
            ));
        }
    }
    if let Some(l) = console_lines(console, "HEARTH-SECURITY-COTURN: ").first() {
        eprintln!("  systemd-analyze security: {}", l.trim());
    }
    // "active listening-22=1 keys=1": the SSH server runs exactly when the owner gave a key.
    let sshd = get("sshd");
    let listening = sshd
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listening-22="))
        .and_then(|n| n.parse::<u32>().ok());
    match (expect.ssh_key, listening) {
        (_, None) => bad.push(format!("the self-test did not report sshd ({sshd:?})")),
        (true, Some(0)) => bad.push(format!(
            "the preseed gave an SSH key but nothing listens on port 22 ({sshd})"
        )),
        (false, Some(n)) if n > 0 || sshd.starts_with("active") => {
            bad.push(format!("no SSH key was given but sshd runs ({sshd})"))
        }
        _ => {}
    }
    if let Some(ssid) = &expect.wifi_ssid {
        // The passphrase must be stored only as the derived key, readable by root alone.
        let want = format!("ssid={ssid} psk=derived plaintext=0 mode=600");
        if get("wifi") != want {
            bad.push(format!(
                "Wi-Fi not configured as the preseed asked: {:?}, expected {want:?}",
                get("wifi")
            ));
        }
        // No line: no hearth-setup.toml (Imager's settings alone; their own check is "imager psk-left").
        if !matches!(get("preseed-psk-left").as_str(), "0" | "") {
            bad.push("the Wi-Fi passphrase is still in hearth-setup.toml".into());
        }
    }
    // Older images do not report hearth-web; an image that does must have it running.
    let web = get("hearth-web");
    if !web.is_empty() && !web.starts_with("active") {
        bad.push(format!("hearth-web is not running ({web})"));
    }
    if !get("failed-units").is_empty() {
        bad.push(format!("failed units: {}", get("failed-units")));
    }
    if get("preseed-password-left") != "0" && !get("preseed-password-left").is_empty() {
        bad.push("the admin password is still in hearth-setup.toml".into());
    }
    let security = console_lines(console, "HEARTH-SECURITY: ");
    match security
        .iter()
        .find(|l| l.contains("Overall exposure level"))
    {
        Some(l) => eprintln!("  systemd-analyze security: {}", l.trim()),
        None => bad.push("no systemd-analyze security report for hearthd.service".into()),
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A console log as a passing preseeded boot prints it (abridged), with `wifi` and `hearthd` lines
    /// replaced by the caller.
    fn console(
        dir: &Path,
        wifi: &str,
        hearthd: &str,
        web: &str,
    ) -> (Vec<String>, std::path::PathBuf) {
        console_ssh(dir, wifi, hearthd, web, "inactive listening-22=0 keys=0")
    }

    fn console_ssh(
        dir: &Path,
        wifi: &str,
        hearthd: &str,
        web: &str,
        sshd: &str,
    ) -> (Vec<String>, std::path::PathBuf) {
        let fsck = "/dev/vda2: clean, 17037/68544 files, 200000/274432 blocks";
        let text = format!(
            "[  OK  ] Started hearth-firstboot.service\r\n\
             hearth-firstboot: no /boot/firmware/hearth-setup.toml: open http://hearth.local/ and give the setup code\r\n\
             HEARTH-SELFTEST: begin\r\n\
             HEARTH-SELFTEST: disk-bytes 3221225472\r\n\
             HEARTH-SELFTEST: rootfs-bytes 2947547136\r\n\
             HEARTH-SELFTEST: root-fsck {fsck}\r\n\
             HEARTH-SELFTEST: journal-max-use 64M\r\n\
             HEARTH-SELFTEST: hearthd {hearthd}\r\n\
             HEARTH-SELFTEST: hearth-web {web}\r\n\
             HEARTH-SELFTEST: wifi {wifi}\r\n\
             HEARTH-SELFTEST: sshd {sshd}\r\n\
             HEARTH-SELFTEST: coturn active user=turnserver listening-3478=2 secret=640:hearth-admin hearthd-turn=1\r\n\
             HEARTH-SELFTEST: failed-units \r\n\
             HEARTH-SELFTEST: preseed-password-left 0\r\n\
             HEARTH-SELFTEST: preseed-psk-left 0\r\n\
             HEARTH-SECURITY: → Overall exposure level for hearthd.service: 1.3 OK :-)\r\n\
             HEARTH-SELFTEST: end\r\n"
        );
        let path = dir.join("console.log");
        std::fs::write(&path, text).unwrap();
        (console_lines(&path, "HEARTH-SELFTEST: "), path)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hearth-selftest-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const WIFI_OK: &str = "ssid=home psk=derived plaintext=0 mode=600";

    #[test]
    fn a_good_preseeded_boot_passes() {
        let dir = scratch("good");
        let (report, path) = console(
            &dir,
            WIFI_OK,
            "active user=hearth",
            "active setup-code-file=no",
        );
        let expect = Expect {
            wizard: false,
            wifi_ssid: Some("home".into()),
            ssh_key: false,
        };
        assert_eq!(judge(&report, &path, &expect), Vec::<String>::new());
    }

    #[test]
    fn a_passphrase_left_in_the_preseed_fails_and_no_preseed_is_fine() {
        let dir = scratch("psk-left");
        let expect = Expect {
            wizard: false,
            wifi_ssid: Some("home".into()),
            ssh_key: false,
        };
        let (mut report, path) = console(
            &dir,
            WIFI_OK,
            "active user=hearth",
            "active setup-code-file=no",
        );
        let at = report
            .iter()
            .position(|l| l == "preseed-psk-left 0")
            .unwrap();
        report[at] = "preseed-psk-left 1".into();
        let bad = judge(&report, &path, &expect);
        assert!(bad.iter().any(|b| b.contains("passphrase")), "{bad:?}");
        // Imager's settings alone: no hearth-setup.toml, so no line at all.
        report.remove(at);
        assert_eq!(judge(&report, &path, &expect), Vec::<String>::new());
    }

    #[test]
    fn wifi_must_hold_only_the_derived_key() {
        let dir = scratch("wifi");
        let expect = Expect {
            wizard: false,
            wifi_ssid: Some("home".into()),
            ssh_key: false,
        };
        for wifi in [
            "none",
            "ssid=home psk=none plaintext=1 mode=600",
            "ssid=home psk=derived plaintext=0 mode=644",
            "ssid=other psk=derived plaintext=0 mode=600",
        ] {
            let (report, path) = console(
                &dir,
                wifi,
                "active user=hearth",
                "active setup-code-file=no",
            );
            let bad = judge(&report, &path, &expect);
            assert!(bad.iter().any(|b| b.contains("Wi-Fi")), "{wifi}: {bad:?}");
        }
    }

    #[test]
    fn hearthd_as_root_or_stopped_fails_a_preseeded_boot() {
        let dir = scratch("hearthd");
        let expect = Expect {
            wizard: false,
            wifi_ssid: None,
            ssh_key: false,
        };
        for hearthd in ["active user=root", "inactive user=none"] {
            let (report, path) = console(&dir, "none", hearthd, "active setup-code-file=no");
            assert!(!judge(&report, &path, &expect).is_empty(), "{hearthd}");
        }
    }

    #[test]
    fn coturn_must_run_once_set_up_and_its_secret_must_exist() {
        let dir = scratch("coturn");
        let expect = Expect {
            wizard: false,
            wifi_ssid: None,
            ssh_key: false,
        };
        let (report, path) = console(
            &dir,
            "none",
            "active user=hearth",
            "active setup-code-file=no",
        );
        assert!(judge(&report, &path, &expect).is_empty());
        for (coturn, wizard) in [
            (
                "inactive user=none listening-3478=0 secret=640:hearth-admin hearthd-turn=1",
                false,
            ),
            (
                "active user=root listening-3478=2 secret=640:hearth-admin hearthd-turn=1",
                false,
            ),
            (
                "active user=turnserver listening-3478=2 secret=640:hearth-admin hearthd-turn=0",
                false,
            ),
            (
                "inactive user=none listening-3478=0 secret=none hearthd-turn=0",
                true,
            ),
            (
                "inactive user=none listening-3478=0 secret=644:root hearthd-turn=0",
                true,
            ),
        ] {
            let report: Vec<String> = report
                .iter()
                .map(|l| match l.starts_with("coturn ") {
                    true => format!("coturn {coturn}"),
                    false => l.clone(),
                })
                .collect();
            let expect = Expect {
                wizard,
                wifi_ssid: None,
                ssh_key: false,
            };
            let bad = judge(&report, &path, &expect);
            assert!(
                bad.iter()
                    .any(|b| b.contains("coturn") || b.contains("TURN")),
                "{coturn}: {bad:?}"
            );
        }
    }

    #[test]
    fn a_fresh_box_needs_the_wizard_and_a_setup_code() {
        let dir = scratch("wizard");
        let expect = Expect {
            wizard: true,
            wifi_ssid: None,
            ssh_key: false,
        };
        // hearthd waits for the wizard: not running is right here.
        let (report, path) = console(
            &dir,
            "none",
            "inactive user=none",
            "active setup-code-file=yes",
        );
        assert_eq!(judge(&report, &path, &expect), Vec::<String>::new());
        let (report, path) = console(
            &dir,
            "none",
            "inactive user=none",
            "active setup-code-file=no",
        );
        let bad = judge(&report, &path, &expect);
        assert!(bad.iter().any(|b| b.contains("SETUP-CODE.txt")), "{bad:?}");
    }

    #[test]
    fn sshd_runs_exactly_when_a_key_was_given() {
        let dir = scratch("sshd");
        let judge_ssh = |ssh_key: bool, sshd: &str| {
            let (report, path) = console_ssh(
                &dir,
                "none",
                "active user=hearth",
                "active setup-code-file=no",
                sshd,
            );
            let expect = Expect {
                wizard: false,
                wifi_ssid: None,
                ssh_key,
            };
            judge(&report, &path, &expect)
        };
        assert_eq!(
            judge_ssh(true, "active listening-22=2 keys=1"),
            Vec::<String>::new()
        );
        assert_eq!(
            judge_ssh(false, "inactive listening-22=0 keys=0"),
            Vec::<String>::new()
        );
        for (key, sshd) in [
            (true, "inactive listening-22=0 keys=1"),
            (false, "active listening-22=2 keys=0"),
            (false, "active listening-22=0 keys=0"),
            (false, "garbled"),
        ] {
            let bad = judge_ssh(key, sshd);
            assert!(
                bad.iter()
                    .any(|b| b.contains("sshd") || b.contains("port 22")),
                "{sshd}: {bad:?}"
            );
        }
    }

    #[test]
    fn a_preseed_key_is_seen_only_when_not_commented_out() {
        assert!(preseed_has_ssh_key(
            "[ssh]\nauthorized_keys = [\"ssh-ed25519 AAAA me\"]\n"
        ));
        assert!(preseed_has_ssh_key(
            "authorized_keys = [\n  \"ecdsa-sha2-nistp256 AAAA\",\n]"
        ));
        assert!(!preseed_has_ssh_key(
            "# authorized_keys = [\"ssh-ed25519 AAAA me\"]\n"
        ));
        assert!(!preseed_has_ssh_key(include_str!(
            "../hearth-setup.example.toml"
        )));
    }

    #[test]
    fn an_unchecked_root_filesystem_fails() {
        let dir = scratch("fsck");
        let expect = Expect {
            wizard: false,
            wifi_ssid: None,
            ssh_key: false,
        };
        let (_, path) = console(
            &dir,
            "none",
            "active user=hearth",
            "active setup-code-file=no",
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().find(|l| l.contains("root-fsck")).unwrap();
        std::fs::write(
            &path,
            text.replace(line, "HEARTH-SELFTEST: root-fsck none\r"),
        )
        .unwrap();
        let report = console_lines(&path, "HEARTH-SELFTEST: ");
        let bad = judge(&report, &path, &expect);
        assert!(bad.iter().any(|b| b.contains("fsck")), "{bad:?}");
    }
}
