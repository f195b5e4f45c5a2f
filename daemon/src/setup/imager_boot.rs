//! First boot with a card Raspberry Pi Imager customised: take its settings off the FAT boot
//! partition. Removes Imager's `systemd.run=` additions from `cmdline.txt` (so later boots are
//! normal), turns `firstrun.sh` or the cloud-init files into a preseed for the first-boot script,
//! and deletes Imager's files (they hold the Wi-Fi key and a password hash). A `hearth-setup.toml`
//! beside them wins. Nothing here fails the boot on bad input: it is noted and left out.

use super::imager::{
    parse_cloud_init, parse_firstrun, strip_cmdline, ImagerSettings, MAX_FILE_BYTES,
};
use std::path::{Path, PathBuf};

/// The files Imager writes to the boot partition.
pub const FIRSTRUN: &str = "firstrun.sh";
pub const USER_DATA: &str = "user-data";
pub const NETWORK_CONFIG: &str = "network-config";
pub const META_DATA: &str = "meta-data";

/// What was done, one line each, for the first-boot log.
#[derive(Debug, Default)]
pub struct ImagerReport {
    pub lines: Vec<String>,
    /// Settings were written to the output file for the first-boot script to apply.
    pub wrote: bool,
}

fn read_small(path: &Path, report: &mut ImagerReport) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            report
                .lines
                .push(format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    if bytes.len() > MAX_FILE_BYTES {
        report.lines.push(format!(
            "{}: ignored: larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Fills what `a` lacks from `b` (a card normally carries one flavour; both is tolerated).
fn merge(mut a: ImagerSettings, b: ImagerSettings) -> ImagerSettings {
    a.hostname = a.hostname.or(b.hostname);
    a.wifi = a.wifi.or(b.wifi);
    if a.ssh_keys.is_empty() {
        a.ssh_keys = b.ssh_keys;
    }
    a.timezone = a.timezone.or(b.timezone);
    a.keyboard = a.keyboard.or(b.keyboard);
    a.user = a.user.or(b.user);
    a.ignored.extend(b.ignored);
    a
}

/// A summary without secrets: names what will be applied.
pub fn describe(s: &ImagerSettings) -> String {
    let mut parts = Vec::new();
    if let Some(h) = &s.hostname {
        parts.push(format!("hostname {h}"));
    }
    if let Some(w) = &s.wifi {
        let hidden = if w.hidden { ", hidden" } else { "" };
        let country = w
            .country
            .as_deref()
            .map(|c| format!(", country {c}"))
            .unwrap_or_default();
        parts.push(format!("Wi-Fi {:?}{country}{hidden}", w.ssid));
    }
    if !s.ssh_keys.is_empty() {
        parts.push(format!("{} SSH key(s)", s.ssh_keys.len()));
    }
    if let Some(tz) = &s.timezone {
        parts.push(format!("time zone {tz}"));
    }
    if let Some(k) = &s.keyboard {
        parts.push(format!("keyboard {k}"));
    }
    if parts.is_empty() {
        "nothing Hearth uses".into()
    } else {
        parts.join(", ")
    }
}

/// Takes Imager's settings from `boot`: writes them as a preseed to `out` (unless `preseed`, the
/// owner's `hearth-setup.toml`, exists), restores `cmdline.txt` and deletes Imager's files.
/// Errors only for what leaves the box unable to boot normally (`cmdline.txt` not rewritable).
pub fn take_imager_settings(
    boot: &Path,
    out: &Path,
    preseed: &Path,
) -> Result<ImagerReport, String> {
    let mut report = ImagerReport::default();
    let cmdline = boot.join("cmdline.txt");
    let mut result = Ok(());
    if let Some(text) = read_small(&cmdline, &mut report) {
        if let Some(clean) = strip_cmdline(&text) {
            match crate::fsutil::write_atomically(&cmdline, clean.as_bytes(), 0o644) {
                Ok(()) => report.lines.push(format!(
                    "removed Imager's systemd.run arguments from {}: later boots are normal",
                    cmdline.display()
                )),
                Err(e) => {
                    result = Err(format!("cannot rewrite {}: {e}", cmdline.display()));
                }
            }
        }
    }
    let path = |name: &str| -> PathBuf { boot.join(name) };
    let firstrun = read_small(&path(FIRSTRUN), &mut report);
    let user = read_small(&path(USER_DATA), &mut report);
    let network = read_small(&path(NETWORK_CONFIG), &mut report);
    let present: Vec<&str> = [FIRSTRUN, USER_DATA, NETWORK_CONFIG, META_DATA]
        .into_iter()
        .filter(|n| path(n).exists())
        .collect();
    if present.is_empty() {
        return result.map(|_| report);
    }
    let (fr_name, ud_name, nc_name) = (
        path(FIRSTRUN).display().to_string(),
        path(USER_DATA).display().to_string(),
        path(NETWORK_CONFIG).display().to_string(),
    );
    let from_script = firstrun
        .as_deref()
        .map(|t| parse_firstrun(t, &fr_name))
        .unwrap_or_default();
    let from_cloud = parse_cloud_init(
        user.as_deref().map(|t| (t, ud_name.as_str())),
        network.as_deref().map(|t| (t, nc_name.as_str())),
    );
    let mut settings = merge(from_script, from_cloud);
    let origin = format!("Raspberry Pi Imager's {}", present.join(", "));
    if preseed.exists() {
        report.lines.push(format!(
            "{} exists: the preseed wins; {origin} not applied ({})",
            preseed.display(),
            describe(&settings)
        ));
    } else if !settings.is_empty() {
        let text = settings.to_preseed_toml(&origin);
        crate::fsutil::write_atomically(out, text.as_bytes(), 0o600)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        report.wrote = true;
        report.lines.push(format!(
            "{origin}: {} (written to {})",
            describe(&settings),
            out.display()
        ));
    } else {
        report.lines.push(format!("{origin}: nothing Hearth uses"));
    }
    if let Some(u) = &settings.user {
        report.lines.push(format!(
            "Imager's user {u:?} and its password are not used: Hearth has no password login (SSH keys log in as root; the chat admin comes from the wizard)"
        ));
    }
    report.lines.extend(settings.ignored.iter().cloned());
    for name in &present {
        match std::fs::remove_file(path(name)) {
            Ok(()) => report
                .lines
                .push(format!("removed {}", path(name).display())),
            Err(e) => report
                .lines
                .push(format!("cannot remove {}: {e}", path(name).display())),
        }
    }
    result.map(|_| report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/imager");

    fn card(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files.iter().chain(["cmdline.txt"].iter()) {
            std::fs::copy(Path::new(FIXTURES).join(f), dir.path().join(f)).unwrap();
        }
        dir
    }

    #[test]
    fn a_firstrun_card_becomes_a_preseed_and_is_cleaned() {
        let boot = card(&[FIRSTRUN]);
        let out = boot.path().join("out.toml");
        let r = take_imager_settings(boot.path(), &out, &boot.path().join("hearth-setup.toml"))
            .unwrap();
        assert!(r.wrote, "{:?}", r.lines);
        let p = super::super::Preseed::load(&out).unwrap();
        assert_eq!(p.hostname.as_deref(), Some("kitchen-pi"));
        assert!(!boot.path().join(FIRSTRUN).exists());
        let cmdline = std::fs::read_to_string(boot.path().join("cmdline.txt")).unwrap();
        assert!(
            !cmdline.contains("systemd.run") && !cmdline.contains("kernel-command-line"),
            "{cmdline}"
        );
        assert!(
            r.lines.iter().any(|l| l.contains("\"anna\"")),
            "{:?}",
            r.lines
        );
        // Again (first boot re-runs until it succeeds): nothing left to do, nothing broken.
        let r = take_imager_settings(boot.path(), &out, &boot.path().join("hearth-setup.toml"))
            .unwrap();
        assert!(!r.wrote && r.lines.is_empty(), "{:?}", r.lines);
    }

    #[test]
    fn a_preseed_wins_and_imagers_secrets_still_go() {
        let boot = card(&[USER_DATA, NETWORK_CONFIG, META_DATA]);
        let preseed = boot.path().join("hearth-setup.toml");
        std::fs::write(&preseed, "hostname = \"mine\"\n").unwrap();
        let out = boot.path().join("out.toml");
        let r = take_imager_settings(boot.path(), &out, &preseed).unwrap();
        assert!(!r.wrote && !out.exists());
        assert!(
            r.lines.iter().any(|l| l.contains("the preseed wins")),
            "{:?}",
            r.lines
        );
        for f in [USER_DATA, NETWORK_CONFIG, META_DATA] {
            assert!(!boot.path().join(f).exists(), "{f}");
        }
    }
}
